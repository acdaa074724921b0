//! Admin keys are for the management API only (issue 17, item 14; DESIGN.md "The CLI
//! contract" and "Verification order", steps 1 and 4): they have a prefix of their own
//! (`csa_`), customer verification (`credstore verify`, the tower layer, the sidecar's
//! `keys.verify`) never finds them valid, and a store can restrict which registered formats
//! customer verification accepts.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use credstore::http::ApiKeyLayer;
use credstore::policy::{Forbidden, PermissionQuery, RoleName};
use credstore::{Code, Env, Error, Format, InputError, KeyUpdate, Malformed, NewKey, StateError, Store, VerifyRequest};
use serde_json::json;
use tower::ServiceExt;

use common::{Cli, Fixture, Sidecar, http};

fn admin_role() -> RoleName {
    RoleName::parse("admin").expect("role")
}

/// The key `init` printed: the bootstrap admin key.
fn bootstrap_key(init: &str) -> String {
    init.lines()
        .map(str::trim)
        .find(|l| l.starts_with("csa_"))
        .unwrap_or_else(|| panic!("init printed no csa_ admin key:\n{init}"))
        .to_string()
}

#[test]
fn the_bootstrap_admin_key_has_its_own_prefix_and_is_never_a_customer_key() {
    let cli = Cli::empty();
    let init = cli.ok(&["init"]);
    let admin = bootstrap_key(&init.stdout);
    assert_eq!(admin.len(), "csa_".len() + 32 + 6, "{admin}");
    // A business of `cmp_` keys: the admin key is a prefix like any other it does not use.
    let customer = cli.json(&["create", "--name", "svc", "--prefix", "cmp_", "--json"]);
    let customer = customer["key"].as_str().expect("key").to_string();

    // `credstore verify`: MALFORMED, unknown prefix, exit 1.
    let run = cli.run(&["verify", &admin, "--json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let doc = run.json();
    assert_eq!(
        (doc["valid"].clone(), doc["code"].clone()),
        (json!(false), json!("MALFORMED"))
    );
    assert_eq!(doc["reason"], "unknown key prefix");
    assert_eq!(doc["key_id"], json!(null), "the admin key is not even looked up: {doc}");
    cli.ok(&["verify", &customer]);

    // An admin key made with `create --role admin` is one too.
    let made = cli.json(&["create", "--name", "ops", "--role", "admin", "--json"]);
    let made = made["key"].as_str().expect("key").to_string();
    assert!(made.starts_with("csa_"), "{made}");
    assert_eq!(cli.run(&["verify", &made]).code, Some(1));

    // The sidecar: `keys.verify` refuses it, the management API takes it (and refuses a
    // customer key with 403).
    let sidecar = Sidecar::start(&cli);
    for key in [&admin, &made] {
        let reply = http(
            sidecar.addr,
            "POST",
            "/v1/keys.verify",
            None,
            Some(&json!({ "key": key })),
        )
        .expect("keys.verify");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["data"]["valid"], false, "{reply:?}");
        assert_eq!(reply.body["data"]["code"], "MALFORMED", "{reply:?}");
        let auth = format!("Bearer {key}");
        let listed = http(sidecar.addr, "GET", "/v1/api-keys", Some(auth.as_str()), None).expect("list");
        assert_eq!(listed.status, 200, "{listed:?}");
    }
    let auth = format!("Bearer {customer}");
    let refused = http(sidecar.addr, "GET", "/v1/api-keys", Some(auth.as_str()), None).expect("list");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "ADMIN_REQUIRED", "{refused:?}");
    // An admin key asked for over the management API is a csa_ key too.
    let auth = format!("Bearer {admin}");
    let created = http(
        sidecar.addr,
        "POST",
        "/v1/api-keys",
        Some(auth.as_str()),
        Some(&json!({ "name": "ops2", "role": "admin" })),
    )
    .expect("create");
    assert_eq!(created.status, 201, "{created:?}");
    assert!(
        created.body["data"]["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("csa_")),
        "{created:?}"
    );
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn admin_keys_are_made_only_as_such_and_stay_in_their_format() {
    let cli = Cli::init();
    let doc = cli.json(&["create", "--name", "svc", "--json"]);
    let service = doc["id"].as_str().expect("id").to_string();
    let before = cli.ok(&["audit", "export"]).stdout;
    for (args, needle) in [
        (&["--role", "admin", "--prefix", "sk_live_"][..], "admin key"),
        (&["--role", "admin", "--env", "test"], "admin key"),
        (&["--prefix", "csa_", "--role", "viewer"], "admin key"),
        (
            &["--prefix", "csa_", "--type", "personal", "--user", "nobody"],
            "admin key",
        ),
        (&["--prefix", "csa_", "--length", "40"], "reserved for admin keys"),
        (&["--prefix", "csa_", "--no-checksum"], "reserved for admin keys"),
    ] {
        let mut full = vec!["create", "--name", "x"];
        full.extend_from_slice(args);
        let run = cli.run(&full);
        assert_eq!(run.code, Some(2), "{full:?}: {run:?}");
        assert!(run.stderr.contains(needle), "{full:?}: {run:?}");
    }
    // A customer key does not become an admin key.
    let run = cli.run(&["update", &service, "--role", "admin"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("csa_"), "{run:?}");
    assert_eq!(cli.ok(&["audit", "export"]).stdout, before, "a refused command wrote");
    // `--prefix csa_` alone is an admin key.
    let doc = cli.json(&["create", "--name", "ops", "--prefix", "csa_", "--json"]);
    assert!(doc["key"].as_str().is_some_and(|k| k.starts_with("csa_")), "{doc}");
    let shown = cli.json(&["show", doc["id"].as_str().expect("id"), "--json"]);
    assert_eq!(shown["role"], "admin", "{shown}");
}

#[tokio::test]
async fn the_layer_refuses_admin_keys() {
    let fx = Fixture::new();
    let store = Arc::new(fx.init());
    let admin = store.create(NewKey::new("ops").role(admin_role())).expect("admin");
    let customer = store.create(NewKey::new("svc")).expect("customer");
    assert!(admin.record.format.is_admin() && admin.key.expose().starts_with("csa_"));
    let app = axum::Router::new()
        .route("/v1/things", get(|| async { "ok" }))
        .layer(ApiKeyLayer::new(Arc::clone(&store)));
    let status = |key: String| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .uri("/v1/things")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .expect("request");
            app.oneshot(req).await.expect("answer").status().as_u16()
        }
    };
    assert_eq!(status(customer.key.expose().to_string()).await, 200);
    assert_eq!(status(admin.key.expose().to_string()).await, 401);
}

#[test]
fn customer_and_management_verification_are_apart() {
    let fx = Fixture::new();
    let store = fx.init();
    let admin = store.create(NewKey::new("ops").role(admin_role())).expect("admin");
    let admin = admin.key.expose().to_string();
    let customer = store.create(NewKey::new("svc")).expect("customer");
    let customer_id = customer.record.id.clone();
    let customer = customer.key.expose().to_string();
    // Customers: an admin key is an unknown prefix, charged nothing, named nowhere.
    let d = store.verify(&admin).expect("verify");
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::UnknownPrefix)));
    assert!(d.key.is_none());
    // Management: only an admin key is valid; a customer key is FORBIDDEN (not_admin_key).
    let everything = PermissionQuery::parse("*").expect("query");
    let d = store
        .verify_admin(&VerifyRequest::new(&admin).require(&everything))
        .expect("verify");
    assert_eq!(d.code, Code::Valid, "{d:?}");
    let d = store.verify_admin(&VerifyRequest::new(&customer)).expect("verify");
    assert_eq!((d.code, d.forbidden), (Code::Forbidden, Some(Forbidden::NotAdminKey)));
    assert!(store.authorize_admin(&admin, "test").is_ok());
    assert!(matches!(
        store.authorize_admin(&customer, "test"),
        Err(Error::State(StateError::AdminRequired(_)))
    ));
    // A personal token of a project admin acts with the admin role for customers, but it
    // is no admin key.
    store
        .set_user(credstore::policy::User {
            id: "root".into(),
            memberships: [("default".to_string(), admin_role())].into(),
        })
        .expect("user");
    let token = store.create(NewKey::new("root's").personal("root")).expect("token");
    let d = store.verify(token.key.expose()).expect("verify");
    assert_eq!(d.code, Code::Valid, "{d:?}");
    assert!(store.authorize_admin(token.key.expose(), "test").is_err());
    // The library refuses what the CLI refuses.
    let err = store
        .create(
            NewKey::new("x")
                .role(admin_role())
                .format(Format::default_for(Env::Live)),
        )
        .expect_err("an admin key in a customer format");
    assert!(matches!(err, Error::Input(InputError::KeyType(_))), "{err}");
    let err = store
        .update(
            &customer_id,
            KeyUpdate {
                role: Some(admin_role()),
                ..KeyUpdate::default()
            },
        )
        .expect_err("a customer key made an admin");
    assert!(matches!(err, Error::Input(InputError::KeyType(_))), "{err}");
}

#[test]
fn a_store_can_restrict_the_formats_customers_verify() {
    let fx = Fixture::new();
    let store = fx.init();
    let cmp = Format::new("cmp_", Env::Live, 32, true).expect("format");
    let cmp_key = store.create(NewKey::new("cmp").format(cmp)).expect("cmp");
    let sk_key = store.create(NewKey::new("sk")).expect("sk");
    let admin = store.create(NewKey::new("ops").role(admin_role())).expect("admin");
    store.close().expect("close");

    let store = Store::open(&fx.path, fx.config.clone().verify_prefixes(["cmp_"])).expect("open");
    assert_eq!(store.verify(cmp_key.key.expose()).expect("verify").code, Code::Valid);
    let d = store.verify(sk_key.key.expose()).expect("verify");
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::UnknownPrefix)));
    // The management API is not restricted by it.
    assert!(store.authorize_admin(admin.key.expose(), "test").is_ok());
    // A format registered later is not accepted either, unless its prefix is named.
    let later = store
        .create(NewKey::new("later").format(Format::default_for(Env::Test)))
        .expect("later");
    assert_eq!(store.verify(later.key.expose()).expect("verify").code, Code::Malformed);
    store.close().expect("close");

    // Naming the admin prefix, or no prefix at all, is refused at open.
    for (bad, expected) in [("csa_", "reserved"), ("cmp", "invalid prefix")] {
        let err = Store::open(&fx.path, fx.config.clone().verify_prefixes([bad])).expect_err(bad);
        assert!(matches!(err, Error::Input(_)), "{bad}: {err}");
        assert!(err.to_string().contains(expected), "{bad}: {err}");
    }

    // Through the CLI: CREDSTORE_VERIFY_PREFIXES.
    let cli = Cli::init();
    let cmp = cli.json(&["create", "--name", "cmp", "--prefix", "cmp_", "--json"]);
    let sk = cli.json(&["create", "--name", "sk", "--json"]);
    let verify = |key: &serde_json::Value| {
        let key = key["key"].as_str().expect("key");
        let out = cli
            .command(&["verify", key, "--json"])
            .env("CREDSTORE_VERIFY_PREFIXES", "cmp_")
            .output()
            .expect("run");
        common::Run::from(out)
    };
    assert_eq!(verify(&cmp).code, Some(0));
    let run = verify(&sk);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.json()["reason"], "unknown key prefix", "{run:?}");
    assert_eq!(cli.run(&["verify", sk["key"].as_str().expect("key")]).code, Some(0));
}
