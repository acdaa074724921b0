//! The sidecar's management API covers the CLI (issue 16, item 2), against the real
//! `credstore serve`: every management route answers admin keys only (401 without a key
//! that verifies, 403 for a key that is not an admin key), and does what the CLI command
//! it stands for does; reading a provider secret needs `vault:read` on the admin key; bad
//! input changes nothing; `GET /openapi.json` is an OpenAPI 3 document that lists every
//! route the router has.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::BTreeSet;

use serde_json::{Value, json};

mod common;
use common::{Cli, Reply, Sidecar, http};

const PEPPER: &str = "4242424242424242424242424242424242424242424242424242424242424242";
const MASTER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MASTER_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A production-style store (pepper and vault master key from the environment) and the
/// binary pointed at it.
struct Store {
    cli: Cli,
}

impl Store {
    fn new() -> Store {
        let store = Store { cli: Cli::empty() };
        store.ok(&["init"]);
        store
    }

    fn env(&self) -> [(&'static str, &'static str); 2] {
        [("CREDSTORE_PEPPER", PEPPER), ("CREDSTORE_MASTER_KEY", MASTER)]
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli.command(args).envs(self.env()).output().expect("run credstore");
        let run = common::Run::from(out);
        assert_eq!(run.code, Some(0), "credstore {args:?}\n{run:?}");
        run.stdout
    }

    /// A key made by `credstore create ... --json`: (key, id).
    fn key(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["create", "--json"];
        all.extend_from_slice(args);
        let doc: Value = serde_json::from_str(&self.ok(&all)).expect("JSON");
        (
            doc["key"].as_str().expect("key").to_string(),
            doc["id"].as_str().expect("id").to_string(),
        )
    }

    /// The sidecar, delivering no webhooks: a delivery attempt in the background (the
    /// test's webhook points at a closed port) would change the state a refused request is
    /// checked not to change.
    fn serve(&self) -> Api {
        Api {
            sidecar: Sidecar::start_full(&self.cli, &["--no-webhook-delivery"], &self.env()),
        }
    }
}

/// A running sidecar.
struct Api {
    sidecar: Sidecar,
}

impl Api {
    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        http(self.sidecar.addr, method, path, auth.as_deref(), body).expect("an answer")
    }

    /// The data of a success answer with `status`.
    #[track_caller]
    fn data(&self, status: u16, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
        let reply = self.call(method, path, Some(key), body.as_ref());
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(reply.body["success"], true, "{method} {path}: {reply:?}");
        reply.body["data"].clone()
    }

    /// An error answer with `status` and `code`; its message.
    #[track_caller]
    fn error(
        &self,
        status: u16,
        code: &str,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> String {
        let reply = self.call(method, path, key, body.as_ref());
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(reply.body["success"], false, "{reply:?}");
        assert_eq!(reply.body["error"]["code"], code, "{method} {path}: {reply:?}");
        let message = reply.body["error"]["message"].as_str().expect("message");
        assert!(!message.is_empty());
        message.to_string()
    }

    /// Everything the management API can read, to show a refused request changed nothing
    /// (but last-used times: each request with an admin key is a use of it).
    fn state(&self, admin: &str) -> Value {
        let mut keys = self.data(200, "GET", "/v1/api-keys?limit=1000", admin, None);
        for key in keys.as_array_mut().expect("array") {
            key.as_object_mut().expect("object").remove("last_used_at");
        }
        json!({
            "keys": keys,
            "plans": self.data(200, "GET", "/v1/plans", admin, None),
            "roles": self.data(200, "GET", "/v1/roles", admin, None),
            "users": self.data(200, "GET", "/v1/users", admin, None),
            "owners": self.data(200, "GET", "/v1/owners", admin, None),
            "secrets": self.data(200, "GET", "/v1/vault/secrets", admin, None),
            "webhooks": self.data(200, "GET", "/v1/webhooks", admin, None),
            "policies": self.data(200, "GET", "/v1/policy", admin, None),
        })
    }

    /// The decision on `key` (cost 0), from `POST /v1/keys.verify`.
    fn code(&self, key: &str) -> String {
        let reply = self.call("POST", "/v1/keys.verify", None, Some(&json!({ "key": key, "cost": 0 })));
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body["data"]["code"].as_str().expect("code").to_string()
    }

    fn stop(self) {
        let (status, stderr) = self.sidecar.stop();
        assert!(status.success(), "{stderr}");
    }
}

/// A management route and a request to it that succeeds for an admin key, in an order
/// where each succeeds after the ones before it.
struct Route {
    method: &'static str,
    /// The route as the router lists it (`{id}`).
    route: &'static str,
    path: String,
    body: Option<Value>,
    /// The admin key that succeeds: the store's plain admin, or one with `vault:read`.
    reader: bool,
}

fn route(method: &'static str, route: &'static str, path: &str, body: Option<Value>) -> Route {
    Route {
        method,
        route,
        path: path.to_string(),
        body,
        reader: false,
    }
}

/// Every management route with an admin key, a key that is not an admin key, a revoked
/// admin key, a disabled admin key, an unknown key and none: success, 403, 401, 401, 401,
/// 401; the refusals change nothing.
#[test]
fn every_management_route_answers_admin_keys_only() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let (reader, _) = store.key(&["--name", "reader", "--role", "admin", "--permission", "vault:read"]);
    let (revoked, revoked_id) = store.key(&["--name", "gone", "--role", "admin"]);
    store.ok(&["revoke", &revoked_id, "--yes"]);
    let (disabled, disabled_id) = store.key(&["--name", "paused", "--role", "admin"]);
    store.ok(&["disable", &disabled_id]);
    let (customer, _) = store.key(&["--name", "customer"]);
    let (_, target) = store.key(&["--name", "target"]);
    let (_, doomed) = store.key(&["--name", "doomed"]);
    let (leaked, _) = store.key(&["--name", "leaked"]);
    let (_, metered) = store.key(&["--name", "metered", "--budget", "100"]);
    let unknown = format!("csa_{}", "A".repeat(32));
    let hook: Value = serde_json::from_str(&store.ok(&[
        "webhook",
        "add",
        "http://127.0.0.1:9/hook",
        "--event",
        "key.revoked",
        "--json",
    ]))
    .expect("webhook add --json");
    let hook = hook["id"].as_str().expect("webhook id").to_string();
    let api = store.serve();

    let routes = [
        route("GET", "/v1/api-keys", "/v1/api-keys", None),
        route("POST", "/v1/api-keys", "/v1/api-keys", Some(json!({ "name": "made" }))),
        route("GET", "/v1/api-keys/{id}", &format!("/v1/api-keys/{target}"), None),
        route(
            "PATCH",
            "/v1/api-keys/{id}",
            &format!("/v1/api-keys/{target}"),
            Some(json!({ "name": "renamed" })),
        ),
        route(
            "POST",
            "/v1/api-keys/{id}/disable",
            &format!("/v1/api-keys/{target}/disable"),
            None,
        ),
        route(
            "POST",
            "/v1/api-keys/{id}/enable",
            &format!("/v1/api-keys/{target}/enable"),
            None,
        ),
        route(
            "POST",
            "/v1/api-keys/{id}/rotate",
            &format!("/v1/api-keys/{target}/rotate"),
            None,
        ),
        route("DELETE", "/v1/api-keys/{id}", &format!("/v1/api-keys/{doomed}"), None),
        route(
            "POST",
            "/v1/api-keys/revoke-by-key",
            "/v1/api-keys/revoke-by-key",
            Some(json!({ "key": leaked })),
        ),
        route(
            "PUT",
            "/v1/owners/{id}",
            "/v1/owners/acme",
            Some(json!({ "name": "Acme", "rate_limits": ["100/1m"], "budget": 10 })),
        ),
        route("GET", "/v1/owners", "/v1/owners", None),
        route("GET", "/v1/owners/{id}", "/v1/owners/acme", None),
        route(
            "POST",
            "/v1/owners/{id}/disable-keys",
            "/v1/owners/acme/disable-keys",
            None,
        ),
        route(
            "POST",
            "/v1/owners/{id}/revoke-keys",
            "/v1/owners/acme/revoke-keys",
            Some(json!({ "reason": "test" })),
        ),
        route(
            "POST",
            "/v1/api-keys/import",
            "/v1/api-keys/import",
            Some(json!([{
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "prefix": "legacy_", "name": "imported",
            }])),
        ),
        route("GET", "/v1/plans", "/v1/plans", None),
        route(
            "PUT",
            "/v1/plans/{name}",
            "/v1/plans/gold",
            Some(json!({ "budget": 10 })),
        ),
        route("DELETE", "/v1/plans/{name}", "/v1/plans/gold", None),
        route("GET", "/v1/roles", "/v1/roles", None),
        route(
            "PUT",
            "/v1/roles/{name}",
            "/v1/roles/auditor",
            Some(json!({ "permissions": ["logs:read"] })),
        ),
        route("DELETE", "/v1/roles/{name}", "/v1/roles/auditor", None),
        route("GET", "/v1/users", "/v1/users", None),
        route(
            "PUT",
            "/v1/users/{id}",
            "/v1/users/ada",
            Some(json!({ "memberships": { "acme": "member" } })),
        ),
        route("DELETE", "/v1/users/{id}", "/v1/users/ada", None),
        route("GET", "/v1/vault/secrets", "/v1/vault/secrets", None),
        route(
            "PUT",
            "/v1/vault/secrets/{name}",
            "/v1/vault/secrets/openai",
            Some(json!({ "secret": "provider-secret-value" })),
        ),
        Route {
            reader: true,
            ..route("GET", "/v1/vault/secrets/{name}", "/v1/vault/secrets/openai", None)
        },
        route("DELETE", "/v1/vault/secrets/{name}", "/v1/vault/secrets/openai", None),
        route(
            "POST",
            "/v1/vault/rotate-master",
            "/v1/vault/rotate-master",
            Some(json!({ "master_key": MASTER_2 })),
        ),
        route("GET", "/v1/audit", "/v1/audit", None),
        route("GET", "/v1/events", "/v1/events", None),
        route("GET", "/v1/usage", "/v1/usage", None),
        route("GET", "/v1/webhooks", "/v1/webhooks", None),
        route(
            "POST",
            "/v1/webhooks",
            "/v1/webhooks",
            Some(json!({ "url": "http://127.0.0.1:9/other", "events": ["key.created"] })),
        ),
        route("DELETE", "/v1/webhooks/{id}", &format!("/v1/webhooks/{hook}"), None),
        route(
            "POST",
            "/v1/api-keys/{id}/credits",
            &format!("/v1/api-keys/{metered}/credits"),
            Some(json!({ "add": 5, "reason": "test" })),
        ),
        route("GET", "/v1/policy", "/v1/policy", None),
        route(
            "PUT",
            "/v1/policy",
            "/v1/policy",
            Some(json!({ "project": "web", "unused_expiry": "90d", "min_grace": "1h" })),
        ),
        route("DELETE", "/v1/policy", "/v1/policy?project=web", None),
    ];

    // The table is every management route: every route of the OpenAPI document but those
    // open to any caller.
    let documented: BTreeSet<(String, String)> = openapi_routes(&api)
        .into_iter()
        .filter(|(_, path)| !open_to_all(path))
        .collect();
    let tested: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.to_string(), r.route.to_string()))
        .collect();
    assert_eq!(
        tested, documented,
        "the table misses a management route, or has one too many"
    );

    for r in &routes {
        let before = api.state(&admin);
        let body = r.body.clone();
        api.error(401, "UNAUTHORIZED", r.method, &r.path, None, body.clone());
        api.error(401, "UNAUTHORIZED", r.method, &r.path, Some(&unknown), body.clone());
        api.error(401, "UNAUTHORIZED", r.method, &r.path, Some(&revoked), body.clone());
        api.error(401, "UNAUTHORIZED", r.method, &r.path, Some(&disabled), body.clone());
        api.error(403, "ADMIN_REQUIRED", r.method, &r.path, Some(&customer), body.clone());
        assert_eq!(
            api.state(&admin),
            before,
            "a refused {} {} changed something",
            r.method,
            r.path
        );
        let key = if r.reader { &reader } else { &admin };
        let reply = api.call(r.method, &r.path, Some(key), body.as_ref());
        assert!(
            (200..300).contains(&reply.status) && reply.body["success"] == true,
            "{} {} as an admin: {reply:?}",
            r.method,
            r.path
        );
    }
    api.stop();
}

#[test]
fn keys_are_created_shown_updated_disabled_enabled_rotated_and_revoked() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let api = store.serve();

    let created = api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(
            json!({ "name": "svc", "project": "acme", "metadata": { "team": "infra" },
                     "rate_limits": ["10/1m"], "budget": 100, "budget_period": "total" }),
        ),
    );
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let path = format!("/v1/api-keys/{id}");
    assert_eq!(api.code(&key), "VALID");

    // Show: the document of `show --json`, never the key.
    let shown = api.data(200, "GET", &path, &admin, None);
    assert_eq!(shown["name"], "svc");
    assert_eq!(shown["project"], "acme");
    assert_eq!(shown["status"], "active");
    assert_eq!(
        shown["budget"],
        json!({ "cap": 100, "period": "total", "anchor_day": null })
    );
    assert_eq!(shown["rate_limits"][0]["limit"], 10);
    assert!(!shown.to_string().contains(&key), "{shown}");

    // Update: only what is given changes; bad input changes nothing.
    let before = api.data(200, "GET", &path, &admin, None);
    api.error(
        400,
        "INVALID_INPUT",
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({ "name": "x", "allow_ips": ["not an ip"] })),
    );
    api.error(400, "BAD_REQUEST", "PATCH", &path, Some(&admin), Some(json!({})));
    api.error(
        400,
        "BAD_REQUEST",
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({ "colour": "red" })),
    );
    api.error(
        404,
        "NOT_FOUND",
        "PATCH",
        &path,
        Some(&admin),
        Some(json!({ "plan": "nope" })),
    );
    assert_eq!(api.data(200, "GET", &path, &admin, None), before);
    let updated = api.data(
        200,
        "PATCH",
        &path,
        &admin,
        Some(json!({ "name": "svc2", "expires_in": "30d", "allow_ips": ["10.0.0.0/8"], "budget": null })),
    );
    assert_eq!(updated["name"], "svc2");
    assert_eq!(updated["metadata"]["team"], "infra", "left as it was");
    assert!(updated["expires_at"].is_string());
    assert_eq!(updated["allow_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(updated["budget"], Value::Null);
    let updated = api.data(
        200,
        "PATCH",
        &path,
        &admin,
        Some(json!({ "expires_at": null, "allow_ips": [] })),
    );
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(updated["allow_ips"], json!([]));

    // Disable and enable.
    assert_eq!(
        api.data(200, "POST", &format!("{path}/disable"), &admin, None)["status"],
        "disabled"
    );
    assert_eq!(api.code(&key), "DISABLED");
    api.error(409, "CONFLICT", "POST", &format!("{path}/disable"), Some(&admin), None);
    assert_eq!(
        api.data(200, "POST", &format!("{path}/enable"), &admin, None)["status"],
        "active"
    );
    assert_eq!(api.code(&key), "VALID");
    api.error(409, "CONFLICT", "POST", &format!("{path}/enable"), Some(&admin), None);

    // Rotate with a grace period: both keys work until it ends; the new key is shown once.
    let rotated = api.data(
        200,
        "POST",
        &format!("{path}/rotate"),
        &admin,
        Some(json!({ "grace": "1h" })),
    );
    let new_key = rotated["key"].as_str().expect("key").to_string();
    let new_id = rotated["id"].as_str().expect("id").to_string();
    assert_eq!(rotated["replaces"], id.as_str());
    assert!(rotated["old_revoked_at"].is_string());
    assert_eq!(api.code(&key), "VALID", "within the grace period");
    assert_eq!(api.code(&new_key), "VALID");
    api.error(409, "CONFLICT", "POST", &format!("{path}/rotate"), Some(&admin), None);
    api.error(
        400,
        "INVALID_INPUT",
        "POST",
        &format!("/v1/api-keys/{new_id}/rotate"),
        Some(&admin),
        Some(json!({ "grace": "soon" })),
    );

    // Revoke by id, with a reason; twice is a conflict.
    let revoked = api.data(
        200,
        "DELETE",
        &format!("/v1/api-keys/{new_id}"),
        &admin,
        Some(json!({ "reason": "done" })),
    );
    assert_eq!(
        (revoked["status"].as_str(), revoked["revoke_reason"].as_str()),
        (Some("revoked"), Some("done"))
    );
    assert_eq!(api.code(&new_key), "REVOKED");
    api.error(
        409,
        "CONFLICT",
        "DELETE",
        &format!("/v1/api-keys/{new_id}"),
        Some(&admin),
        None,
    );

    // Revoke a leaked key by its value.
    let leaked = api.data(201, "POST", "/v1/api-keys", &admin, Some(json!({ "name": "leaky" })));
    let leaked_key = leaked["key"].as_str().expect("key").to_string();
    let by_value = api.data(
        200,
        "POST",
        "/v1/api-keys/revoke-by-key",
        &admin,
        Some(json!({ "key": leaked_key, "reason": "found in a public repo" })),
    );
    assert_eq!(by_value["id"], leaked["id"]);
    assert_eq!(by_value["status"], "revoked");
    assert!(!by_value.to_string().contains(&leaked_key));
    assert_eq!(api.code(&leaked_key), "REVOKED");
    let message = api.error(
        404,
        "NOT_FOUND",
        "POST",
        "/v1/api-keys/revoke-by-key",
        Some(&admin),
        Some(json!({ "key": format!("sk_live_{}", "Z".repeat(38)) })),
    );
    assert!(!message.contains("ZZZZ"), "{message}");
    api.error(
        409,
        "CONFLICT",
        "POST",
        "/v1/api-keys/revoke-by-key",
        Some(&admin),
        Some(json!({ "key": leaked_key })),
    );

    // Unknown and malformed ids.
    let nobody = format!("/v1/api-keys/key_{}", "0".repeat(22));
    for (method, suffix) in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/disable"),
        ("POST", "/enable"),
        ("POST", "/rotate"),
    ] {
        let body = (method == "PATCH").then(|| json!({ "name": "n" }));
        api.error(
            404,
            "NOT_FOUND",
            method,
            &format!("{nobody}{suffix}"),
            Some(&admin),
            body.clone(),
        );
        api.error(
            400,
            "INVALID_INPUT",
            method,
            &format!("/v1/api-keys/nonsense{suffix}"),
            Some(&admin),
            body,
        );
    }

    // The sidecar's documents are the ones `show --json` prints (once the sidecar is gone:
    // it holds the store's lock).
    let mut served = api.data(200, "GET", &path, &admin, None);
    api.stop();
    let mut printed: Value = serde_json::from_str(&store.ok(&["show", &id, "--json"])).expect("JSON");
    for doc in [&mut served, &mut printed] {
        doc.as_object_mut().expect("object").remove("last_used_at");
    }
    assert_eq!(served, printed);
}

#[test]
fn lists_page_by_cursor_in_creation_order_with_filters() {
    let store = Store::new();
    let (admin, admin_id) = store.key(&["--name", "admin", "--role", "admin"]);
    let mut ids = vec![admin_id];
    for i in 0..6 {
        let project = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(store.key(&["--name", &format!("k{i}"), "--project", project]).1);
    }
    // `init`'s bootstrap admin key comes first.
    let api = store.serve();
    let all = api.data(200, "GET", "/v1/api-keys", &admin, None);
    assert_eq!(all.as_array().map(Vec::len), Some(8));

    let mut seen = Vec::new();
    let mut path = "/v1/api-keys?limit=3".to_string();
    let mut pages = 0;
    loop {
        let reply = api.call("GET", &path, Some(&admin), None);
        assert_eq!(reply.status, 200, "{reply:?}");
        let page = reply.body["data"].as_array().expect("array").clone();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|k| k["id"].as_str().expect("id").to_string()));
        pages += 1;
        match reply.body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(Some(cursor), page.last().and_then(|k| k["id"].as_str()));
                path = format!("/v1/api-keys?limit=3&after={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let listed: Vec<String> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(seen, listed, "every key once, in creation order");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ids sort by creation");
    assert!(ids.iter().all(|id| seen.contains(id)));

    // A page that ends exactly at the last key says so.
    let exact = api.call("GET", "/v1/api-keys?limit=8", Some(&admin), None);
    assert_eq!(exact.body["next_cursor"], Value::Null, "{exact:?}");

    // Filters with paging.
    let odd = api.call("GET", "/v1/api-keys?project=odd&limit=2", Some(&admin), None);
    assert_eq!(odd.body["data"].as_array().map(Vec::len), Some(2));
    assert!(
        odd.body["data"]
            .as_array()
            .expect("array")
            .iter()
            .all(|k| k["project"] == "odd")
    );
    let cursor = odd.body["next_cursor"].as_str().expect("a next page").to_string();
    let rest = api.data(
        200,
        "GET",
        &format!("/v1/api-keys?project=odd&limit=2&after={cursor}"),
        &admin,
        None,
    );
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
    api.data(200, "POST", &format!("/v1/api-keys/{}/disable", ids[1]), &admin, None);
    let disabled = api.data(200, "GET", "/v1/api-keys?status=disabled", &admin, None);
    assert_eq!(disabled.as_array().map(Vec::len), Some(1));
    assert_eq!(disabled[0]["id"], ids[1].as_str());

    // Bad paging input.
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "after=nonsense",
        "status=sleepy",
        "colour=red",
    ] {
        let reply = api.call("GET", &format!("/v1/api-keys?{bad}"), Some(&admin), None);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
        assert_eq!(reply.body["success"], false);
    }
    api.stop();
}

#[test]
fn plans_roles_and_users_are_set_listed_and_deleted() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let api = store.serve();

    // Plans.
    let plan = api.data(
        200,
        "PUT",
        "/v1/plans/gold",
        &admin,
        Some(json!({ "rate_limits": ["100/1m:minute"], "budget": 500, "budget_period": "daily" })),
    );
    assert_eq!(plan["name"], "gold");
    assert_eq!(
        plan["rate_limits"][0],
        json!({ "name": "minute", "limit": 100, "window_ms": 60_000 })
    );
    assert_eq!(
        plan["budget"],
        json!({ "cap": 500, "period": "daily", "anchor_day": null })
    );
    assert_eq!(api.data(200, "GET", "/v1/plans", &admin, None), json!([plan]));
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/plans/gold",
        Some(&admin),
        Some(json!({ "rate_limits": ["0/1m"] })),
    );
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/plans/gold",
        Some(&admin),
        Some(json!({ "budget": 1, "budget_period": "weekly" })),
    );
    assert_eq!(
        api.data(200, "GET", "/v1/plans", &admin, None),
        json!([plan]),
        "bad input changed nothing"
    );
    let on_plan = api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "tiered", "plan": "gold" })),
    );
    api.error(409, "CONFLICT", "DELETE", "/v1/plans/gold", Some(&admin), None);
    api.data(
        200,
        "PATCH",
        &format!("/v1/api-keys/{}", on_plan["id"].as_str().expect("id")),
        &admin,
        Some(json!({ "plan": null })),
    );
    assert_eq!(
        api.data(200, "DELETE", "/v1/plans/gold", &admin, None),
        json!({ "deleted": "gold" })
    );
    assert_eq!(api.data(200, "GET", "/v1/plans", &admin, None), json!([]));
    api.error(404, "NOT_FOUND", "DELETE", "/v1/plans/gold", Some(&admin), None);
    api.error(
        404,
        "NOT_FOUND",
        "POST",
        "/v1/api-keys",
        Some(&admin),
        Some(json!({ "name": "k", "plan": "gold" })),
    );

    // Roles.
    let role = api.data(
        200,
        "PUT",
        "/v1/roles/auditor",
        &admin,
        Some(json!({ "permissions": ["logs:read", "usage:*"] })),
    );
    assert_eq!(
        role,
        json!({ "name": "auditor", "permissions": ["logs:read", "usage:*"] })
    );
    let roles = api.data(200, "GET", "/v1/roles", &admin, None);
    let names: BTreeSet<&str> = roles
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["admin", "auditor", "member", "viewer"]));
    api.error(
        409,
        "CONFLICT",
        "PUT",
        "/v1/roles/admin",
        Some(&admin),
        Some(json!({ "permissions": ["x:y"] })),
    );
    api.error(409, "CONFLICT", "DELETE", "/v1/roles/viewer", Some(&admin), None);
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/roles/auditor",
        Some(&admin),
        Some(json!({ "permissions": ["no colon"] })),
    );
    let svc = api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "aud", "role": "auditor" })),
    );
    let svc_key = svc["key"].as_str().expect("key").to_string();
    let needs = |require: &str| {
        let reply = api.call(
            "POST",
            "/v1/keys.verify",
            None,
            Some(&json!({ "key": svc_key, "require": require, "cost": 0 })),
        );
        reply.body["data"]["code"].as_str().expect("code").to_string()
    };
    assert_eq!(needs("logs:read"), "VALID");
    assert_eq!(needs("logs:write"), "INSUFFICIENT_PERMISSIONS");
    api.error(409, "CONFLICT", "DELETE", "/v1/roles/auditor", Some(&admin), None);
    api.data(
        200,
        "DELETE",
        &format!("/v1/api-keys/{}", svc["id"].as_str().expect("id")),
        &admin,
        None,
    );
    // Even revoked, a key keeps naming its role: the role stays in use.
    api.error(409, "CONFLICT", "DELETE", "/v1/roles/auditor", Some(&admin), None);
    api.data(
        200,
        "PUT",
        "/v1/roles/unused",
        &admin,
        Some(json!({ "permissions": ["x:read"] })),
    );
    assert_eq!(
        api.data(200, "DELETE", "/v1/roles/unused", &admin, None),
        json!({ "deleted": "unused" })
    );
    let roles = api.data(200, "GET", "/v1/roles", &admin, None);
    assert!(
        roles.as_array().expect("array").iter().all(|r| r["name"] != "unused"),
        "{roles}"
    );
    api.error(404, "NOT_FOUND", "DELETE", "/v1/roles/nobody", Some(&admin), None);

    // Users, and a personal token that acts with its user's role.
    api.error(
        404,
        "NOT_FOUND",
        "PUT",
        "/v1/users/ada",
        Some(&admin),
        Some(json!({ "memberships": { "acme": "wizard" } })),
    );
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/users/ada",
        Some(&admin),
        Some(json!({ "memberships": { "acme": "not a role!" } })),
    );
    assert_eq!(
        api.data(200, "GET", "/v1/users", &admin, None),
        json!([]),
        "bad input changed nothing"
    );
    let ada = api.data(
        200,
        "PUT",
        "/v1/users/ada",
        &admin,
        Some(json!({ "memberships": { "acme": "viewer" } })),
    );
    assert_eq!(ada, json!({ "id": "ada", "memberships": { "acme": "viewer" } }));
    assert_eq!(api.data(200, "GET", "/v1/users", &admin, None), json!([ada]));
    let token = api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "ada's", "type": "personal", "user": "ada", "project": "acme" })),
    );
    let token_key = token["key"].as_str().expect("key").to_string();
    let write = |key: &str| {
        let reply = api.call(
            "POST",
            "/v1/keys.verify",
            None,
            Some(&json!({ "key": key, "require": "docs:write", "cost": 0 })),
        );
        reply.body["data"]["code"].as_str().expect("code").to_string()
    };
    assert_eq!(write(&token_key), "INSUFFICIENT_PERMISSIONS");
    api.data(
        200,
        "PUT",
        "/v1/users/ada",
        &admin,
        Some(json!({ "memberships": { "acme": "admin" } })),
    );
    assert_eq!(
        write(&token_key),
        "VALID",
        "a membership change applies to the next request"
    );
    assert_eq!(
        api.data(200, "DELETE", "/v1/users/ada", &admin, None),
        json!({ "deleted": "ada" })
    );
    let removed = api.call(
        "POST",
        "/v1/keys.verify",
        None,
        Some(&json!({ "key": token_key, "cost": 0 })),
    );
    assert_eq!(removed.body["data"]["forbidden"], "user_removed", "{removed:?}");
    api.error(404, "NOT_FOUND", "DELETE", "/v1/users/ada", Some(&admin), None);
    api.stop();
}

#[test]
fn the_vault_puts_lists_deletes_and_rotates_and_reads_only_for_vault_read_keys() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let (reader, _) = store.key(&["--name", "reader", "--role", "admin", "--permission", "vault:read"]);
    let api = store.serve();
    let value = "sk-provider-0123456789abcdefSECRET";

    let put = api.data(
        200,
        "PUT",
        "/v1/vault/secrets/openai?project=acme",
        &admin,
        Some(json!({ "secret": value })),
    );
    assert_eq!(
        put,
        json!({ "project": "acme", "name": "openai", "version": 1, "master_version": 1 })
    );
    let put2 = api.data(
        200,
        "PUT",
        "/v1/vault/secrets/openai?project=acme",
        &admin,
        Some(json!({ "secret": "v2-value" })),
    );
    assert_eq!(put2["version"], 2);
    api.data(
        200,
        "PUT",
        "/v1/vault/secrets/stripe",
        &admin,
        Some(json!({ "secret": "stripe-value" })),
    );
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/vault/secrets/openai?project=acme",
        Some(&admin),
        Some(json!({ "secret": "" })),
    );
    api.error(
        400,
        "BAD_REQUEST",
        "PUT",
        "/v1/vault/secrets/openai",
        Some(&admin),
        Some(json!({ "value": "x" })),
    );

    let list = api.data(200, "GET", "/v1/vault/secrets", &admin, None);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    assert!(!list.to_string().contains(value), "the list holds no value");
    let acme = api.data(200, "GET", "/v1/vault/secrets?project=acme", &admin, None);
    assert_eq!(acme.as_array().map(Vec::len), Some(2));
    assert!(
        acme.as_array()
            .expect("array")
            .iter()
            .all(|s| s["project"] == "acme" && s["created_at"].is_string())
    );

    // Reading a value: an admin key without vault:read of its own is refused, before any
    // lookup (an unknown secret too).
    api.error(
        403,
        "INSUFFICIENT_PERMISSIONS",
        "GET",
        "/v1/vault/secrets/openai?project=acme",
        Some(&admin),
        None,
    );
    api.error(
        403,
        "INSUFFICIENT_PERMISSIONS",
        "GET",
        "/v1/vault/secrets/nothing",
        Some(&admin),
        None,
    );
    let latest = api.data(200, "GET", "/v1/vault/secrets/openai?project=acme", &reader, None);
    assert_eq!(
        latest,
        json!({ "project": "acme", "name": "openai", "version": 2, "secret": "v2-value" })
    );
    let first = api.data(
        200,
        "GET",
        "/v1/vault/secrets/openai?project=acme&version=1",
        &reader,
        None,
    );
    assert_eq!(first["secret"], value);
    api.error(
        404,
        "NOT_FOUND",
        "GET",
        "/v1/vault/secrets/openai?project=acme&version=9",
        Some(&reader),
        None,
    );
    api.error(404, "NOT_FOUND", "GET", "/v1/vault/secrets/openai", Some(&reader), None);

    // Rotating the master key: bad input changes nothing; a given key, then a generated one.
    let before = api.state(&admin);
    api.error(
        400,
        "BAD_REQUEST",
        "POST",
        "/v1/vault/rotate-master",
        Some(&admin),
        Some(json!({})),
    );
    api.error(
        400,
        "BAD_REQUEST",
        "POST",
        "/v1/vault/rotate-master",
        Some(&admin),
        Some(json!({ "master_key": MASTER_2, "generate": true })),
    );
    let message = api.error(
        400,
        "INVALID_INPUT",
        "POST",
        "/v1/vault/rotate-master",
        Some(&admin),
        Some(json!({ "master_key": "abc123" })),
    );
    assert!(!message.contains("abc123"), "{message}");
    assert_eq!(api.state(&admin), before);
    let rotated = api.data(
        200,
        "POST",
        "/v1/vault/rotate-master",
        &admin,
        Some(json!({ "master_key": MASTER_2 })),
    );
    assert_eq!(
        rotated,
        json!({ "master_version": 2, "rewrapped": 3, "retired_below": null })
    );
    let list = api.data(200, "GET", "/v1/vault/secrets", &admin, None);
    assert!(
        list.as_array().expect("array").iter().all(|s| s["master_version"] == 2),
        "{list}"
    );
    assert_eq!(
        api.data(200, "GET", "/v1/vault/secrets/stripe", &reader, None)["secret"],
        "stripe-value"
    );
    let generated = api.data(
        200,
        "POST",
        "/v1/vault/rotate-master",
        &admin,
        Some(json!({ "generate": true, "retire_old": true })),
    );
    assert_eq!(generated["master_version"], 3);
    assert_eq!(generated["retired_below"], 3);
    let shown = generated["master_key"].as_str().expect("the generated key, once");
    assert!(shown.starts_with("3:") && shown.len() == 66, "{shown}");
    assert_eq!(
        api.data(200, "GET", "/v1/vault/secrets/openai?project=acme", &reader, None)["secret"],
        "v2-value"
    );

    // Delete.
    assert_eq!(
        api.data(200, "DELETE", "/v1/vault/secrets/openai?project=acme", &admin, None),
        json!({ "project": "acme", "deleted": "openai" })
    );
    api.error(
        404,
        "NOT_FOUND",
        "DELETE",
        "/v1/vault/secrets/openai?project=acme",
        Some(&admin),
        None,
    );
    api.error(
        404,
        "NOT_FOUND",
        "GET",
        "/v1/vault/secrets/openai?project=acme",
        Some(&reader),
        None,
    );
    assert_eq!(
        api.data(200, "GET", "/v1/vault/secrets", &admin, None)
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // No value ever reached the audit log.
    let audit = api.data(200, "GET", "/v1/audit", &admin, None).to_string();
    assert!(audit.contains("vault.read"), "reads are recorded");
    for secret in [value, "v2-value", "stripe-value", MASTER_2, &shown[2..]] {
        assert!(!audit.contains(secret), "the audit log shows a secret");
    }
    api.stop();
}

/// A sidecar without the master key manages keys as ever; the vault answers 503.
#[test]
fn without_a_master_key_the_vault_answers_503() {
    let cli = Cli::empty();
    let init = cli
        .command(&["init"])
        .env("CREDSTORE_PEPPER", PEPPER)
        .output()
        .expect("init");
    assert!(init.status.success());
    let admin = cli
        .command(&[
            "create",
            "--name",
            "admin",
            "--role",
            "admin",
            "--permission",
            "vault:read",
            "--json",
        ])
        .env("CREDSTORE_PEPPER", PEPPER)
        .output()
        .expect("create");
    let admin: Value = serde_json::from_slice(&admin.stdout).expect("JSON");
    let admin = admin["key"].as_str().expect("key").to_string();
    let api = Api {
        sidecar: Sidecar::start_env(&cli, &[("CREDSTORE_PEPPER", PEPPER)]),
    };
    api.error(
        503,
        "NO_MASTER_KEY",
        "PUT",
        "/v1/vault/secrets/s",
        Some(&admin),
        Some(json!({ "secret": "v" })),
    );
    api.data(200, "GET", "/v1/vault/secrets", &admin, None);
    api.data(200, "GET", "/v1/api-keys", &admin, None);
    api.stop();
}

#[test]
fn the_audit_log_is_filtered_by_key_kind_time_order_and_count() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let api = store.serve();
    let a = api.data(201, "POST", "/v1/api-keys", &admin, Some(json!({ "name": "a" })));
    let b = api.data(201, "POST", "/v1/api-keys", &admin, Some(json!({ "name": "b" })));
    let (a_id, b_id) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    api.data(200, "POST", &format!("/v1/api-keys/{a_id}/disable"), &admin, None);
    api.data(200, "DELETE", &format!("/v1/api-keys/{b_id}?reason=test"), &admin, None);

    let of_a = api.data(200, "GET", &format!("/v1/audit?key={a_id}"), &admin, None);
    let kinds: Vec<&str> = of_a
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["key.created", "key.disabled"]);
    let revoked = api.data(200, "GET", "/v1/audit?kind=key.revoked", &admin, None);
    assert_eq!(revoked.as_array().map(Vec::len), Some(1));
    assert_eq!(revoked[0]["details"]["key_id"], b_id);
    assert_eq!(revoked[0]["details"]["reason"], "test");
    assert!(revoked[0]["seq"].is_u64() && revoked[0]["at"].is_string());

    let created = api.data(200, "GET", "/v1/audit?kind=key.created", &admin, None);
    let newest = api.data(
        200,
        "GET",
        "/v1/audit?kind=key.created&newest_first=true&limit=1",
        &admin,
        None,
    );
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(newest[0]["details"]["key_id"], b_id);
    let count = created.as_array().map_or(0, Vec::len);
    assert!(count >= 4, "init's admin, ours, a and b: {created}");

    assert_eq!(
        api.data(200, "GET", "/v1/audit?since=1h&kind=key.created", &admin, None),
        created
    );
    assert_eq!(
        api.data(200, "GET", "/v1/audit?until=1h&kind=key.created", &admin, None),
        json!([])
    );
    assert_eq!(
        api.data(200, "GET", "/v1/audit?since=2000-01-01&until=2001-01-01", &admin, None),
        json!([])
    );
    for bad in [
        "since=yesterday-ish",
        "until=soon",
        "key=nonsense",
        "newest_first=maybe",
        "limit=-1",
        "colour=red",
    ] {
        let reply = api.call("GET", &format!("/v1/audit?{bad}"), Some(&admin), None);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    api.stop();
}

/// The OpenAPI document: JSON, OpenAPI 3.x, and exactly the routes of `router()` (read
/// from its source, the one place routes are listed), each of which the sidecar answers.
#[test]
fn the_openapi_document_lists_every_route_the_router_has() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let api = store.serve();
    let reply = api.call("GET", "/openapi.json", None, None);
    assert_eq!(reply.status, 200);
    let doc = &reply.body;
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let documented = openapi_routes(&api);
    let routed = router_routes();
    assert!(routed.len() >= 25, "{routed:?}");
    assert!(
        documented == routed,
        "GET /openapi.json and router() disagree: routed but not documented (give the handler \
         #[utoipa::path] and name it in openapi::ApiDoc): {:?}; documented but not routed: {:?}",
        routed.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&routed).collect::<Vec<_>>(),
    );

    // Every operation has a 200 or 201 answer with a schema, and every management route
    // says it needs an admin key.
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        let ok = &op["responses"];
        assert!(ok["200"].is_object() || ok["201"].is_object(), "{method} {path}: {op}");
        assert_eq!(op["security"].is_array(), !open_to_all(path), "{method} {path}");
    }

    // Each route exists: never the fallback's "no such endpoint" nor a 405. (Forward auth
    // and operations answer in their own formats; tests/sidecar_ops.rs calls them.)
    let enveloped = documented.iter().filter(|(_, path)| {
        !path.starts_with("/v1/auth") && !["/healthz", "/readyz", "/metrics"].contains(&path.as_str())
    });
    for (method, path) in enveloped {
        let concrete = path
            .replace("{id}", &format!("key_{}", "0".repeat(22)))
            .replace("{name}", "nothing")
            .replace("{path}", "anything");
        let reply = api.call(method, &concrete, Some(&admin), None);
        assert_ne!(reply.status, 405, "{method} {path}: {reply:?}");
        assert!(
            !(reply.status == 404 && reply.body["error"]["message"] == "no such endpoint"),
            "{method} {path}: {reply:?}"
        );
    }
    api.stop();
}

/// Whether a route is open to any caller (no admin key): verification, forward auth,
/// leak reports (`tests/leaks.rs`), operations and the document itself.
fn open_to_all(path: &str) -> bool {
    [
        "/openapi.json",
        "/v1/keys.verify",
        "/v1/leaks",
        "/healthz",
        "/readyz",
        "/metrics",
    ]
    .contains(&path)
        || path.starts_with("/v1/auth")
}

/// (METHOD, path) of every operation in the sidecar's OpenAPI document.
fn openapi_routes(api: &Api) -> BTreeSet<(String, String)> {
    let reply = api.call("GET", "/openapi.json", None, None);
    let paths = reply.body["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// (METHOD, path) of every `.route(...)` in `router()` in `src/bin/credstore/serve.rs`,
/// and in the `routes()` that `router()` merges: forward auth's (`serve/auth.rs`) and
/// operations' (`serve/ops.rs`). An `any(...)` route is documented for GET, POST, PUT,
/// PATCH and DELETE; a `{*path}` wildcard as the parameter `{path}`.
fn router_routes() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/credstore/");
    let read = |file: &str| std::fs::read_to_string(format!("{dir}{file}")).expect("a serve source file");
    let serve = read("serve.rs");
    assert!(serve.contains(".merge(gate.routes())") && serve.contains(".merge(ops.routes())"));
    let mut routes = routes_in(&serve, "fn router(", ".fallback(");
    for file in ["serve/auth.rs", "serve/ops.rs"] {
        routes.extend(routes_in(&read(file), "fn routes<", ".with_state("));
    }
    routes
}

/// The routes of the function starting at `from`, up to `to`.
fn routes_in(source: &str, from: &str, to: &str) -> BTreeSet<(String, String)> {
    let start = source.find(from).expect("the routes' function");
    let body = &source[start..];
    let body = &body[..body.find(to).expect("the routes' end")];
    let mut routes = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's text, to its closing parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route(");
        let call = &rest[..end];
        let path = call
            .split('"')
            .nth(1)
            .expect("a path literal")
            .replace("{*path}", "{path}");
        let handlers = &call[call.find(',').expect("a method router")..];
        // The method router is a chain at the top level of the call: `get(...)`, then
        // `.post(...)`; what is inside each call (a handler, a closure) is not looked at.
        let mut methods = 0;
        let mut depth = 0;
        for (i, c) in handlers.char_indices() {
            match c {
                '(' if depth == 0 => {
                    let word_start = handlers[..i]
                        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .map_or(0, |j| j + 1);
                    let word = &handlers[word_start..i];
                    match word {
                        "get" | "post" | "put" | "patch" | "delete" | "head" | "options" => {
                            routes.insert((word.to_uppercase(), path.clone()));
                            methods += 1;
                        }
                        "any" => {
                            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                                routes.insert((method.to_string(), path.clone()));
                            }
                            methods += 1;
                        }
                        other => panic!("router() routes {path} with {other}(...): teach this test to read it"),
                    }
                    depth += 1;
                }
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
        }
        assert!(methods > 0, "no method for {path}");
        rest = &rest[end..];
    }
    routes
}

#[test]
fn owners_are_set_shown_and_their_keys_listed_verified_and_revoked_over_http() {
    let store = Store::new();
    let (admin, _) = store.key(&["--name", "admin", "--role", "admin"]);
    let api = store.serve();

    let set = api.data(
        200,
        "PUT",
        "/v1/owners/acme",
        &admin,
        Some(
            json!({ "name": "Acme", "metadata": { "tier": "gold" }, "rate_limits": ["2/1h"],
                     "budget": 100, "budget_period": "total" }),
        ),
    );
    assert_eq!(set["id"], "acme");
    assert_eq!(set["budget_state"]["remaining"], 100);
    // What is not given stays.
    let renamed = api.data(
        200,
        "PUT",
        "/v1/owners/acme",
        &admin,
        Some(json!({ "name": "Acme Corp" })),
    );
    assert_eq!(renamed["metadata"], json!({ "tier": "gold" }));
    assert_eq!(renamed["rate_limits"][0]["limit"], 2);
    api.error(
        400,
        "INVALID_INPUT",
        "PUT",
        "/v1/owners/a%20b",
        Some(&admin),
        Some(json!({})),
    );
    api.error(404, "NOT_FOUND", "GET", "/v1/owners/nobody", Some(&admin), None);
    api.error(
        404,
        "NOT_FOUND",
        "POST",
        "/v1/api-keys",
        Some(&admin),
        Some(json!({ "name": "k", "owner": "nobody" })),
    );

    let created = api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "k1", "owner": "acme" })),
    );
    let key = created["key"].as_str().expect("key").to_string();
    api.data(
        201,
        "POST",
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "k2", "owner": "acme" })),
    );
    api.data(201, "POST", "/v1/api-keys", &admin, Some(json!({ "name": "unowned" })));
    let listed = api.data(200, "GET", "/v1/api-keys?owner=acme", &admin, None);
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["k1", "k2"]);
    assert!(listed.as_array().expect("array").iter().all(|k| k["owner"] == "acme"));

    let reply = api.call("POST", "/v1/keys.verify", None, Some(&json!({ "key": key })));
    let decision = &reply.body["data"];
    assert_eq!(decision["code"], "VALID", "{reply:?}");
    assert_eq!(decision["owner"]["id"], "acme");
    assert_eq!(decision["owner"]["name"], "Acme Corp");
    assert_eq!(decision["owner"]["metadata"]["tier"], "gold");
    assert_eq!(decision["owner"]["budget"]["spent"], 1);
    assert_eq!(decision["ratelimits"][0]["name"], "owner:1h");

    let revoked = api.data(
        200,
        "POST",
        "/v1/owners/acme/revoke-keys",
        &admin,
        Some(json!({ "reason": "churned" })),
    );
    assert_eq!(revoked["key_ids"].as_array().expect("array").len(), 2);
    assert_eq!(api.code(&key), "REVOKED");
    api.stop();
}
