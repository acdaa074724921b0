//! Access policy through the real binary (issue 4, DESIGN.md "The CLI contract"): the
//! `create` / `update` flags `--role --type --user --permission --allow-ip
//! --allow-referrer --allow-endpoint`, `verify --ip --referrer --endpoint --require
//! --project --env`, and the `user` and `role` commands.
//!
//! Exit codes: 0 valid, 1 denied (`FORBIDDEN` and `INSUFFICIENT_PERMISSIONS` included),
//! 2 bad input (nothing written). Each test has its own development store in a temp dir;
//! `CREDSTORE_PEPPER` and `CREDSTORE_DATA` are removed from the environment.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use serde_json::{Value, json};

mod common;
use common::{Cli, Run};

// The fixture is in `common`; these helpers are for this file's tests only.
impl Cli {
    /// `create --json` with these extra arguments; returns the key and its id.
    #[track_caller]
    fn create(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["create", "--name", name, "--json"];
        args.extend_from_slice(extra);
        let doc = self.json(&args);
        let key = doc["key"].as_str().expect("key").to_string();
        let id = doc["id"].as_str().expect("id").to_string();
        (key, id)
    }

    /// `verify KEY --json` with these extra arguments: the exit code and the document.
    #[track_caller]
    fn verify(&self, key: &str, extra: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec!["verify", key, "--json"];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        assert!(
            matches!(run.code, Some(0 | 1)),
            "verify {extra:?} must decide, not fail\n{run:?}"
        );
        (run.code, run.json())
    }

    /// The state-changing events of the log (the source of truth), use events (which
    /// verifies write) aside.
    fn changes(&self) -> Vec<Value> {
        let export = self.ok(&["audit", "export"]).stdout;
        export
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
            .filter(|e| !["key.used", "key.use_summary", "use.dropped"].contains(&e["kind"].as_str().unwrap_or("")))
            .collect()
    }

    /// Runs a command that must exit 2 and name the problem on stderr.
    #[track_caller]
    fn refused(&self, args: &[&str], needle: &str) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, Some(2), "credstore {args:?} must exit 2\n{run:?}");
        assert!(
            run.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "credstore {args:?}: stderr should mention {needle:?}\n{run:?}"
        );
        run
    }
}

/// Checks a `verify --json` outcome: exit code, code, status, forbidden reason, role.
#[track_caller]
fn expect(outcome: (Option<i32>, Value), code: &str, forbidden: Option<&str>, role: Option<&str>) {
    let (exit, doc) = outcome;
    let status = match code {
        "VALID" => 200,
        "FORBIDDEN" | "INSUFFICIENT_PERMISSIONS" => 403,
        _ => 401,
    };
    assert_eq!(exit, Some(if code == "VALID" { 0 } else { 1 }), "{doc}");
    assert_eq!(doc["code"], json!(code), "{doc}");
    assert_eq!(doc["status"], json!(status), "{doc}");
    assert_eq!(doc["valid"], json!(code == "VALID"), "{doc}");
    assert_eq!(doc["forbidden"], json!(forbidden), "{doc}");
    assert_eq!(doc["role"], json!(role), "{doc}");
}

#[test]
fn restrictions_and_permissions_through_create_and_verify() {
    let cli = Cli::init();
    let (key, id) = cli.create(
        "locked down",
        &[
            "--project",
            "acme",
            "--role",
            "viewer",
            "--permission",
            "billing:write",
            "--allow-ip",
            "10.0.0.0/8",
            "--allow-ip",
            "2001:db8::/32",
            "--allow-referrer",
            "*.example.com",
            "--allow-endpoint",
            "GET /v1/users/*",
        ],
    );
    let good = [
        ("--ip", "10.1.2.3"),
        ("--referrer", "https://app.example.com/x"),
        ("--endpoint", "GET /v1/users/42"),
    ];
    // A request that passes every restriction, with `extra` flags replacing or adding to
    // the good ones.
    let verify = |extra: &[&str]| {
        let overrides: Vec<(&str, &str)> = extra.chunks(2).map(|c| (c[0], c[1])).collect();
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in good {
            let value = overrides.iter().find(|(f, _)| *f == flag).map_or(value, |(_, v)| *v);
            args.extend([flag, value]);
        }
        for (flag, value) in &overrides {
            if !good.iter().any(|(f, _)| f == flag) {
                args.extend([*flag, *value]);
            }
        }
        cli.verify(&key, &args)
    };
    let valid = verify(&[]);
    assert_eq!(valid.1["project"], json!("acme"));
    assert_eq!(valid.1["key_id"], json!(id));
    expect(valid, "VALID", None, Some("viewer"));
    expect(
        verify(&["--project", "acme", "--env", "live"]),
        "VALID",
        None,
        Some("viewer"),
    );
    for (extra, reason) in [
        (&["--ip", "11.0.0.1"][..], "ip"),
        (&["--ip", "2001:db9::1"], "ip"),
        (&["--referrer", "https://example.com/"], "referrer"),
        (&["--referrer", "https://evil.net/"], "referrer"),
        (&["--endpoint", "POST /v1/users/42"], "endpoint"),
        (&["--endpoint", "GET /v1/users/42/keys"], "endpoint"),
        (&["--project", "other"], "project"),
        (&["--env", "test"], "environment"),
        // The project is checked before the allowlists.
        (&["--project", "other", "--ip", "11.0.0.1"], "project"),
    ] {
        expect(verify(extra), "FORBIDDEN", Some(reason), Some("viewer"));
    }
    for (extra, ok) in [
        (&["--ip", "::ffff:10.9.9.9"][..], true),
        (&["--ip", "2001:db8::7"], true),
        (&["--referrer", "https://a.b.example.com:8443/"], true),
        (&["--endpoint", "get /v1/users/7?expand=1"], true),
        (&["--ip", "::ffff:11.0.0.1"], false),
    ] {
        let (code, doc) = verify(extra);
        assert_eq!(code == Some(0), ok, "{extra:?}: {doc}");
    }
    // A key that restricts IPs refuses a request that gives none; likewise the others.
    expect(cli.verify(&key, &[]), "FORBIDDEN", Some("ip"), Some("viewer"));
    expect(
        cli.verify(&key, &["--ip", "10.0.0.1"]),
        "FORBIDDEN",
        Some("referrer"),
        Some("viewer"),
    );
    expect(
        cli.verify(&key, &["--ip", "10.0.0.1", "--referrer", "https://x.example.com"]),
        "FORBIDDEN",
        Some("endpoint"),
        Some("viewer"),
    );
    // Permission queries: the viewer role reads, the key may also write billing.
    for (q, ok) in [
        ("docs:read", true),
        ("billing:write", true),
        ("jobs:run", false),
        ("(docs:read OR docs:write) AND billing:write", true),
        ("(docs:write OR jobs:run) AND billing:write", false),
        ("docs:read AND jobs:run", false),
        ("jobs:run AND docs:write OR docs:read", true),
    ] {
        if ok {
            expect(verify(&["--require", q]), "VALID", None, Some("viewer"));
        } else {
            expect(
                verify(&["--require", q]),
                "INSUFFICIENT_PERMISSIONS",
                None,
                Some("viewer"),
            );
        }
    }
    // FORBIDDEN is decided before INSUFFICIENT_PERMISSIONS.
    expect(
        verify(&["--ip", "11.0.0.1", "--require", "jobs:run"]),
        "FORBIDDEN",
        Some("ip"),
        Some("viewer"),
    );
    // A revoked key is REVOKED whatever the request says.
    cli.ok(&["revoke", &id, "--yes"]);
    expect(
        cli.verify(
            &key,
            &["--ip", "11.0.0.1", "--project", "other", "--require", "jobs:run"],
        ),
        "REVOKED",
        None,
        None,
    );
}

#[test]
fn show_and_update_carry_the_policy() {
    let cli = Cli::init();
    let (key, id) = cli.create(
        "service",
        &[
            "--project",
            "acme",
            "--allow-ip",
            "10.0.0.0/8",
            "--permission",
            "docs:write",
        ],
    );
    let shown = cli.json(&["show", &id, "--json"]);
    assert_eq!(shown["type"], json!("service"));
    assert_eq!(shown["role"], json!("member"), "a service account defaults to member");
    assert_eq!(shown["user"], Value::Null);
    assert_eq!(shown["permissions"], json!(["docs:write"]));
    assert_eq!(shown["allow_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(shown["allow_referrers"], json!([]));
    assert_eq!(shown["allow_endpoints"], json!([]));
    expect(cli.verify(&key, &["--ip", "10.0.0.1"]), "VALID", None, Some("member"));

    cli.ok(&[
        "update",
        &id,
        "--role",
        "viewer",
        "--permission",
        "jobs:run",
        "--allow-ip",
        "192.168.0.0/16",
        "--allow-referrer",
        "example.com",
        "--allow-endpoint",
        "ANY /v1/**",
    ]);
    let shown = cli.json(&["show", &id, "--json"]);
    assert_eq!(shown["role"], json!("viewer"));
    assert_eq!(shown["permissions"], json!(["jobs:run"]));
    assert_eq!(shown["allow_ips"], json!(["192.168.0.0/16"]));
    assert_eq!(shown["allow_referrers"], json!(["example.com"]));
    assert_eq!(shown["allow_endpoints"], json!(["ANY /v1/**"]));
    let good = [
        "--ip",
        "192.168.4.4",
        "--referrer",
        "https://example.com/",
        "--endpoint",
        "DELETE /v1/a/b",
    ];
    expect(cli.verify(&key, &good), "VALID", None, Some("viewer"));
    expect(
        cli.verify(
            &key,
            &[
                "--ip",
                "10.0.0.1",
                "--referrer",
                "https://example.com/",
                "--endpoint",
                "GET /v1",
            ],
        ),
        "FORBIDDEN",
        Some("ip"),
        Some("viewer"),
    );
    let mut require = good.to_vec();
    require.extend(["--require", "jobs:run AND docs:read"]);
    expect(cli.verify(&key, &require), "VALID", None, Some("viewer"));
    let mut require = good.to_vec();
    require.extend(["--require", "docs:write"]);
    expect(
        cli.verify(&key, &require),
        "INSUFFICIENT_PERMISSIONS",
        None,
        Some("viewer"),
    );
}

#[test]
fn users_and_roles_round_trip_and_personal_tokens_follow_them() {
    let cli = Cli::init();
    let roles = cli.json(&["role", "list", "--json"]);
    assert_eq!(
        roles,
        json!([
            {"name": "admin", "permissions": ["*"]},
            {"name": "member", "permissions": ["*:read", "*:run"]},
            {"name": "viewer", "permissions": ["*:read"]},
        ])
    );
    cli.ok(&[
        "role",
        "set",
        "support",
        "--permission",
        "tickets:read",
        "--permission",
        "tickets:write",
    ]);
    let roles = cli.json(&["role", "list", "--json"]);
    assert!(
        roles
            .as_array()
            .unwrap()
            .contains(&json!({"name": "support", "permissions": ["tickets:read", "tickets:write"]})),
        "{roles}"
    );
    assert_eq!(roles.as_array().unwrap().len(), 4);
    assert_eq!(cli.json(&["user", "list", "--json"]), json!([]));
    cli.ok(&[
        "user",
        "set",
        "alice",
        "--member",
        "acme=member",
        "--member",
        "beta=support",
    ]);
    assert_eq!(
        cli.json(&["user", "list", "--json"]),
        json!([{"id": "alice", "memberships": {"acme": "member", "beta": "support"}}])
    );

    let (token, id) = cli.create(
        "alice's",
        &["--type", "personal", "--user", "alice", "--project", "acme"],
    );
    let shown = cli.json(&["show", &id, "--json"]);
    assert_eq!(shown["type"], json!("personal"));
    assert_eq!(shown["user"], json!("alice"));
    assert_eq!(shown["role"], Value::Null);
    expect(
        cli.verify(&token, &["--require", "jobs:run"]),
        "VALID",
        None,
        Some("member"),
    );
    // Demoted: the next verify (another process) has lost `run`.
    cli.ok(&["user", "set", "alice", "--member", "acme=viewer"]);
    assert_eq!(
        cli.json(&["user", "list", "--json"]),
        json!([{"id": "alice", "memberships": {"acme": "viewer"}}])
    );
    expect(
        cli.verify(&token, &["--require", "jobs:run"]),
        "INSUFFICIENT_PERMISSIONS",
        None,
        Some("viewer"),
    );
    expect(
        cli.verify(&token, &["--require", "docs:read"]),
        "VALID",
        None,
        Some("viewer"),
    );
    // A custom role, changed in place.
    cli.ok(&["user", "set", "alice", "--member", "acme=support"]);
    expect(
        cli.verify(&token, &["--require", "tickets:write"]),
        "VALID",
        None,
        Some("support"),
    );
    cli.ok(&["role", "set", "support", "--permission", "tickets:read"]);
    expect(
        cli.verify(&token, &["--require", "tickets:write"]),
        "INSUFFICIENT_PERMISSIONS",
        None,
        Some("support"),
    );
    // No longer a member of the token's project, then removed: FORBIDDEN, naming which
    // (issue 17, item 4: both used to say `project`).
    cli.ok(&["user", "set", "alice", "--member", "beta=admin"]);
    expect(cli.verify(&token, &[]), "FORBIDDEN", Some("not_a_member"), None);
    let text = cli.run(&["verify", &token]);
    assert_eq!(text.code, Some(1), "{text:?}");
    assert!(text.stdout.contains("[user not a member of the project]"), "{text:?}");
    cli.ok(&["user", "set", "alice", "--member", "acme=viewer"]);
    expect(cli.verify(&token, &[]), "VALID", None, Some("viewer"));
    cli.ok(&["user", "remove", "alice"]);
    assert_eq!(cli.json(&["user", "list", "--json"]), json!([]));
    expect(
        cli.verify(&token, &["--project", "acme"]),
        "FORBIDDEN",
        Some("user_removed"),
        None,
    );
    let text = cli.run(&["verify", &token]);
    assert!(text.stdout.contains("[user removed]"), "{text:?}");
    // A role nothing has any more can be deleted.
    cli.ok(&["role", "delete", "support"]);
    let roles = cli.json(&["role", "list", "--json"]);
    assert_eq!(roles.as_array().unwrap().len(), 3, "{roles}");
    // Everything survives a rebuild of the index.
    cli.ok(&["role", "set", "ops", "--permission", "jobs:*"]);
    cli.ok(&["user", "set", "bob", "--member", "acme=ops"]);
    let (bob, _) = cli.create("bob's", &["--type", "personal", "--user", "bob", "--project", "acme"]);
    let users = cli.json(&["user", "list", "--json"]);
    let roles = cli.json(&["role", "list", "--json"]);
    cli.ok(&["rebuild"]);
    assert_eq!(cli.json(&["user", "list", "--json"]), users);
    assert_eq!(cli.json(&["role", "list", "--json"]), roles);
    expect(
        cli.verify(&bob, &["--require", "jobs:deploy"]),
        "VALID",
        None,
        Some("ops"),
    );
    expect(cli.verify(&token, &[]), "FORBIDDEN", Some("user_removed"), None);
}

#[test]
fn bad_policy_input_exits_2_and_writes_nothing() {
    let cli = Cli::init();
    cli.ok(&["role", "set", "support", "--permission", "tickets:read"]);
    cli.ok(&["user", "set", "alice", "--member", "acme=support"]);
    let (key, id) = cli.create("service", &["--project", "acme", "--role", "support"]);
    let before = cli.changes();
    let keys = cli.json(&["list", "--json"]);
    let users = cli.json(&["user", "list", "--json"]);
    let roles = cli.json(&["role", "list", "--json"]);
    let refused = |args: &[&str], needle: &str| cli.refused(args, needle);
    let cases: &[(&[&str], &str)] = &[
        (&["--allow-ip", "10.0.0.0/33"], "CIDR"),
        (&["--allow-ip", "10.0.0.0/8", "--allow-ip", "not-an-ip"], "CIDR"),
        (&["--allow-endpoint", "GET /v1/***"], "glob"),
        (&["--allow-endpoint", "GET v1/users"], "glob"),
        (&["--allow-endpoint", "/v1/users"], "endpoint"),
        (&["--allow-referrer", "https://example.com"], "referrer"),
        (&["--allow-referrer", "*example.com"], "referrer"),
        (&["--permission", "Docs:read"], "permission"),
        (&["--role", "nope"], "nope"),
        (&["--role", "Admin"], "role"),
        (&["--type", "personal"], "--user"),
        (&["--type", "personal", "--user", "ghost"], "ghost"),
        (
            &["--type", "personal", "--user", "alice", "--role", "viewer"],
            "personal",
        ),
        (&["--user", "alice"], "personal"),
        (&["--type", "robot"], "robot"),
        // Issue 17, item 4: a token that could never verify is not created.
        (
            &["--type", "personal", "--user", "alice", "--project", "beta"],
            "\"alice\" is not a member of project \"beta\"",
        ),
        (
            &["--type", "personal", "--user", "alice"],
            "not a member of project \"default\"",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["create", "--name", "x"];
        args.extend_from_slice(extra);
        refused(&args, needle);
    }
    refused(&["update", &id, "--role", "nope"], "nope");
    refused(&["update", &id, "--allow-ip", "10.0.0.0/99"], "CIDR");
    refused(&["update", &id, "--allow-endpoint", "GET /v1/***"], "glob");
    refused(&["user", "set", "bob", "--member", "acme=nope"], "nope");
    refused(&["user", "set", "bob", "--member", "acme"], "K=V");
    refused(&["user", "set", "bad user", "--member", "acme=viewer"], "user");
    refused(&["user", "remove", "ghost"], "ghost");
    refused(&["role", "set", "admin", "--permission", "x:y"], "built in");
    refused(&["role", "set", "Bad", "--permission", "x:y"], "role");
    refused(&["role", "set", "ok", "--permission", "x"], "permission");
    refused(&["role", "delete", "viewer"], "built in");
    refused(&["role", "delete", "support"], "support");
    refused(&["role", "delete", "ghost"], "ghost");
    // Bad verify input is a usage error (2), not a denial (1).
    for (args, needle) in [
        (&["--require", "(a:b"][..], "query"),
        (&["--require", "a:b AND"], "query"),
        (&["--require", "a:b OR (c:d"], "query"),
        (&["--ip", "10.0.0.999"], "ip"),
        (&["--endpoint", "GET"], "METHOD PATH"),
        (&["--env", "staging"], "staging"),
    ] {
        let mut full = vec!["verify", key.as_str()];
        full.extend_from_slice(args);
        refused(&full, needle);
    }
    // Nothing was written by any of them: the log (the source of truth) holds no new
    // change, and keys, users and roles are as they were.
    let after = cli.changes();
    assert_eq!(
        after,
        before,
        "new events: {:#?}",
        &after[before.len().min(after.len())..]
    );
    assert_eq!(cli.json(&["list", "--json"]), keys);
    assert_eq!(cli.json(&["user", "list", "--json"]), users);
    assert_eq!(cli.json(&["role", "list", "--json"]), roles);
    // The store still works, and the key is untouched.
    expect(
        cli.verify(&key, &["--require", "tickets:read"]),
        "VALID",
        None,
        Some("support"),
    );
}
