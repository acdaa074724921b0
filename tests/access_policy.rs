//! Access policy through the public API (issue 4; DESIGN.md "Verification order", steps 4
//! to 6): every `FORBIDDEN` path and its reason, permission queries against the built-in
//! and custom roles, the order of the checks, personal tokens following their user's
//! current role in every thread, admin-only operations, bad input, and persistence of
//! roles, users and restrictions across reopen and rebuild.
//!
//! "Nothing written" is checked by comparing the count of state-changing events (use
//! events, which verify hands off asynchronously, aside), the key list, the formats, the
//! roles and the users before and after a refused call. No test asserts on timing: concurrency tests
//! order events with atomics.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::net::IpAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use credstore::policy::{
    EndpointAllowlist, Forbidden, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist, Role, RoleName, User,
};
use credstore::record::KeyKind;
use credstore::{
    Budget, Code, Decision, Env, Error, Expiry, Format, InputError, KeyId, KeyInfo, KeyUpdate, ListFilter, NewKey,
    Period, RateLimit, StateError, Store, VerifyRequest,
};

mod common;
use common::Fixture;

const HOUR: i64 = 3_600_000;

fn role(name: &str) -> RoleName {
    RoleName::parse(name).expect("a role name")
}

fn perms(list: &[&str]) -> PermissionSet {
    PermissionSet::parse(list).expect("permissions")
}

fn query(text: &str) -> PermissionQuery {
    PermissionQuery::parse(text).expect("a query")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

fn custom_role(name: &str, permissions: &[&str]) -> Role {
    Role::new(role(name), perms(permissions))
}

fn user(id: &str, memberships: &[(&str, &str)]) -> User {
    let mut u = User::new(id).expect("a user id");
    for (project, r) in memberships {
        u.memberships.insert(project.to_string(), role(r));
    }
    u
}

/// Creates a key and returns the key text and its id.
fn create(store: &Store, new: NewKey) -> (String, KeyId) {
    let created = store.create(new).expect("create");
    (created.key.expose().to_string(), created.record.id)
}

/// Verifies a key that must be valid or denied for a policy reason.
fn check(store: &Store, req: &VerifyRequest<'_>) -> Decision {
    store.verify_with(req).expect("verify")
}

fn require(store: &Store, key: &str, q: &str) -> Decision {
    let q = query(q);
    check(store, &VerifyRequest::new(key).require(&q))
}

/// The effective role a decision reports, as text.
fn role_of(d: &Decision) -> Option<&str> {
    d.role.as_ref().map(RoleName::as_str)
}

#[track_caller]
fn assert_forbidden(d: &Decision, why: Forbidden) {
    assert_eq!(d.code, Code::Forbidden, "{d:?}");
    assert_eq!(d.forbidden, Some(why), "{d:?}");
    assert_eq!(d.http_status(), 403);
    assert!(!d.is_valid());
    assert!(d.key.is_some(), "a FORBIDDEN decision names the key");
    assert!(d.ratelimits.is_empty() && d.budget.is_none(), "nothing charged: {d:?}");
}

#[track_caller]
fn assert_insufficient(d: &Decision) {
    assert_eq!(d.code, Code::InsufficientPermissions, "{d:?}");
    assert_eq!(d.http_status(), 403);
    assert_eq!(d.forbidden, None, "{d:?}");
    assert!(d.key.is_some());
    assert!(d.ratelimits.is_empty() && d.budget.is_none(), "nothing charged: {d:?}");
}

#[track_caller]
fn assert_valid(d: &Decision) {
    assert_eq!(d.code, Code::Valid, "{d:?}");
    assert_eq!(d.http_status(), 200);
    assert_eq!(d.forbidden, None);
}

/// What a refused call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    events: usize,
    keys: Vec<KeyInfo>,
    roles: Vec<Role>,
    users: Vec<User>,
    formats: Vec<Format>,
}

/// Event kinds a verify hands off to the log asynchronously; they are not state changes.
const USE_KINDS: [&str; 3] = ["key.used", "key.use_summary", "use.dropped"];

fn snapshot(store: &Store) -> Snapshot {
    let events = store.events(&Default::default()).expect("events");
    Snapshot {
        events: events
            .iter()
            .filter(|(_, e)| !USE_KINDS.contains(&e.kind_name()))
            .count(),
        keys: store.list(&ListFilter::default()).expect("list"),
        roles: store.roles(),
        users: store.users(),
        formats: store.formats().iter().cloned().collect(),
    }
}

/// Runs `call`, which must fail with a caller error, and checks that nothing was written.
#[track_caller]
fn refused<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> Error {
    let before = snapshot(store);
    let err = call().expect_err("the call must be refused");
    assert!(err.is_caller_error(), "{err:?} should be a caller error");
    assert!(!err.to_string().is_empty());
    assert_eq!(snapshot(store), before, "a refused call wrote something ({err})");
    err
}

#[track_caller]
fn input_error<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> InputError {
    match refused(store, call) {
        Error::Input(e) => e,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[track_caller]
fn state_error<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> StateError {
    match refused(store, call) {
        Error::State(e) => e,
        other => panic!("expected a state error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Every 403 path

/// One request in a table: which key, and what the host knows of the request.
struct Row {
    key: &'static str,
    project: Option<&'static str>,
    env: Option<Env>,
    ip: Option<&'static str>,
    referrer: Option<&'static str>,
    endpoint: Option<(&'static str, &'static str)>,
    expect: Option<Forbidden>,
}

const ROW: Row = Row {
    key: "plain",
    project: None,
    env: None,
    ip: None,
    referrer: None,
    endpoint: None,
    expect: None,
};

#[test]
fn every_forbidden_path_names_its_reason() {
    let fx = Fixture::new();
    let store = fx.init();
    let in_acme = |name: &str| NewKey::new(name).project("acme");
    let keys: Vec<(&str, String)> = [
        ("plain", in_acme("plain")),
        ("test", in_acme("test").format(Format::default_for(Env::Test))),
        (
            "ip",
            in_acme("ip").allow_ips(IpAllowlist::new(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]).unwrap()),
        ),
        (
            "referrer",
            in_acme("referrer").allow_referrers(ReferrerAllowlist::new(["*.example.com"]).unwrap()),
        ),
        (
            "endpoint",
            in_acme("endpoint").allow_endpoints(EndpointAllowlist::new(["GET /v1/users/*"]).unwrap()),
        ),
    ]
    .into_iter()
    .map(|(name, new)| (name, create(&store, new).0))
    .collect();
    assert!(keys[1].1.starts_with("sk_test_"));
    // The reasons, for short.
    const PROJECT: Option<Forbidden> = Some(Forbidden::Project);
    const ENV: Option<Forbidden> = Some(Forbidden::Environment);
    const IP: Option<Forbidden> = Some(Forbidden::Ip);
    const REFERRER: Option<Forbidden> = Some(Forbidden::Referrer);
    const ENDPOINT: Option<Forbidden> = Some(Forbidden::Endpoint);
    #[rustfmt::skip]
    let table = [
        // 4. The project and environment the request pins.
        Row { project: Some("acme"), ..ROW },
        Row { project: Some("other"), expect: PROJECT, ..ROW },
        Row { project: Some("ACME"), expect: PROJECT, ..ROW },
        Row { env: Some(Env::Live), ..ROW },
        Row { env: Some(Env::Test), expect: ENV, ..ROW },
        Row { key: "test", env: Some(Env::Test), ..ROW },
        Row { key: "test", env: Some(Env::Live), expect: ENV, ..ROW },
        Row { key: "test", project: Some("acme"), env: Some(Env::Test), ..ROW },
        // An unrestricted key ignores what the request says about itself.
        Row { ip: Some("203.0.113.9"), referrer: Some("https://evil.net/"), endpoint: Some(("DELETE", "/x")), ..ROW },
        // 5. IP allowlist: v4, v6, IPv4-mapped v6, and a request that gives no address.
        Row { key: "ip", ip: Some("10.1.2.3"), ..ROW },
        Row { key: "ip", ip: Some("10.255.255.255"), ..ROW },
        Row { key: "ip", ip: Some("192.168.1.7"), ..ROW },
        Row { key: "ip", ip: Some("192.168.1.8"), expect: IP, ..ROW },
        Row { key: "ip", ip: Some("11.0.0.1"), expect: IP, ..ROW },
        Row { key: "ip", ip: Some("::ffff:10.1.2.3"), ..ROW },
        Row { key: "ip", ip: Some("::ffff:192.168.1.7"), ..ROW },
        Row { key: "ip", ip: Some("::ffff:11.0.0.1"), expect: IP, ..ROW },
        Row { key: "ip", ip: Some("2001:db8::1"), ..ROW },
        Row { key: "ip", ip: Some("2001:db8:ffff::42"), ..ROW },
        Row { key: "ip", ip: Some("2001:db9::1"), expect: IP, ..ROW },
        Row { key: "ip", ip: Some("::1"), expect: IP, ..ROW },
        Row { key: "ip", expect: IP, ..ROW },
        // 5. Referrer allowlist: `*.example.com` is every subdomain, not the apex.
        Row { key: "referrer", referrer: Some("https://app.example.com/x"), ..ROW },
        Row { key: "referrer", referrer: Some("https://a.b.example.com:8443/y?z=1"), ..ROW },
        Row { key: "referrer", referrer: Some("https://APP.Example.COM/"), ..ROW },
        Row { key: "referrer", referrer: Some("https://example.com/"), expect: REFERRER, ..ROW },
        Row { key: "referrer", referrer: Some("example.com"), expect: REFERRER, ..ROW },
        Row { key: "referrer", referrer: Some("https://evil.net/"), expect: REFERRER, ..ROW },
        Row { key: "referrer", referrer: Some("https://app.example.com.evil.net/"), expect: REFERRER, ..ROW },
        Row { key: "referrer", referrer: Some("https://evil.net/?r=app.example.com"), expect: REFERRER, ..ROW },
        Row { key: "referrer", referrer: Some(""), expect: REFERRER, ..ROW },
        Row { key: "referrer", expect: REFERRER, ..ROW },
        // 5. Endpoint allowlist: method plus path glob.
        Row { key: "endpoint", endpoint: Some(("GET", "/v1/users/42")), ..ROW },
        Row { key: "endpoint", endpoint: Some(("get", "/v1/users/42")), ..ROW },
        Row { key: "endpoint", endpoint: Some(("GET", "/v1/users/42?expand=1")), ..ROW },
        Row { key: "endpoint", endpoint: Some(("POST", "/v1/users/42")), expect: ENDPOINT, ..ROW },
        Row { key: "endpoint", endpoint: Some(("GET", "/v1/users/42/keys")), expect: ENDPOINT, ..ROW },
        Row { key: "endpoint", endpoint: Some(("GET", "/v1/users")), expect: ENDPOINT, ..ROW },
        Row { key: "endpoint", endpoint: Some(("GET", "/v2/users/42")), expect: ENDPOINT, ..ROW },
        Row { key: "endpoint", expect: ENDPOINT, ..ROW },
    ];
    for (i, row) in table.iter().enumerate() {
        let key = &keys.iter().find(|(name, _)| *name == row.key).expect("a key").1;
        let mut req = VerifyRequest::new(key).cost(0);
        req.project = row.project;
        req.env = row.env;
        req.ip = row.ip.map(ip);
        req.referrer = row.referrer;
        req.endpoint = row.endpoint;
        let d = check(&store, &req);
        let what = format!(
            "row {i}: key {} project {:?} env {:?} ip {:?} referrer {:?} endpoint {:?}",
            row.key, row.project, row.env, row.ip, row.referrer, row.endpoint
        );
        match row.expect {
            None => assert_eq!((d.code, d.forbidden), (Code::Valid, None), "{what}"),
            Some(why) => {
                assert_eq!((d.code, d.forbidden), (Code::Forbidden, Some(why)), "{what}");
                assert_forbidden(&d, why);
            }
        }
        // The decision names the key's project and role either way.
        let record = d.key.as_ref().expect("the key");
        assert_eq!(record.project, "acme", "{what}");
        assert_eq!(role_of(&d), Some("member"), "{what}");
    }
}

#[test]
fn forbidden_reasons_follow_the_verification_order() {
    let fx = Fixture::new();
    let store = fx.init();
    let (key, _) = create(
        &store,
        NewKey::new("locked down")
            .project("acme")
            .role(role("viewer"))
            .allow_ips(IpAllowlist::new(["10.0.0.0/8"]).unwrap())
            .allow_referrers(ReferrerAllowlist::new(["*.example.com"]).unwrap())
            .allow_endpoints(EndpointAllowlist::new(["GET /v1/users/*"]).unwrap()),
    );
    let run = query("jobs:run");
    let read = query("docs:read");
    let (good_ip, good_referrer, good_endpoint) = (ip("10.0.0.1"), "https://app.example.com/", ("GET", "/v1/users/7"));
    let good = VerifyRequest::new(&key)
        .project("acme")
        .env(Env::Live)
        .ip(good_ip)
        .referrer(good_referrer)
        .endpoint(good_endpoint.0, good_endpoint.1);
    // Everything wrong: the pinned project is checked first (step 4).
    let all_bad = VerifyRequest::new(&key)
        .project("other")
        .env(Env::Test)
        .ip(ip("8.8.8.8"))
        .referrer("https://evil.net/")
        .endpoint("DELETE", "/v1/admin")
        .require(&run);
    assert_forbidden(&check(&store, &all_bad), Forbidden::Project);
    // Then the pinned environment (step 4).
    let env_bad = all_bad.project("acme");
    assert_forbidden(&check(&store, &env_bad), Forbidden::Environment);
    // Then the IP, referrer and endpoint allowlists, in that order (step 5).
    let ip_bad = env_bad.env(Env::Live);
    assert_forbidden(&check(&store, &ip_bad), Forbidden::Ip);
    let referrer_bad = ip_bad.ip(good_ip);
    assert_forbidden(&check(&store, &referrer_bad), Forbidden::Referrer);
    let endpoint_bad = referrer_bad.referrer(good_referrer);
    assert_forbidden(&check(&store, &endpoint_bad), Forbidden::Endpoint);
    // Then the permissions (step 6): FORBIDDEN is decided before INSUFFICIENT_PERMISSIONS.
    let permissions_bad = endpoint_bad.endpoint(good_endpoint.0, good_endpoint.1);
    assert_insufficient(&check(&store, &permissions_bad));
    assert_forbidden(&check(&store, &good.ip(ip("8.8.8.8")).require(&run)), Forbidden::Ip);
    // Everything right.
    let d = check(&store, &good.require(&read));
    assert_valid(&d);
    assert_eq!(role_of(&d), Some("viewer"));
    assert_valid(&check(&store, &good));
}

/// A request for `key` that every policy check refuses.
fn hostile<'a>(key: &'a str, require: &'a PermissionQuery) -> VerifyRequest<'a> {
    VerifyRequest {
        project: Some("other"),
        env: Some(Env::Test),
        ip: Some(ip("8.8.8.8")),
        referrer: Some("https://evil.net/"),
        endpoint: Some(("POST", "/admin")),
        require: Some(require),
        ..VerifyRequest::new(key)
    }
}

#[test]
fn status_and_parsing_are_decided_before_policy() {
    let fx = Fixture::new();
    let store = fx.init();
    let restricted = |name: &str| {
        NewKey::new(name)
            .project("acme")
            .role(role("viewer"))
            .allow_ips(IpAllowlist::new(["10.0.0.0/8"]).unwrap())
            .allow_referrers(ReferrerAllowlist::new(["example.com"]).unwrap())
            .allow_endpoints(EndpointAllowlist::new(["GET /v1/*"]).unwrap())
    };
    let (revoked, revoked_id) = create(&store, restricted("revoked"));
    let (disabled, disabled_id) = create(&store, restricted("disabled"));
    let (expiring, _) = create(&store, restricted("expiring").expires(Expiry::In(HOUR)));
    store.revoke(&revoked_id, Some("leaked")).unwrap();
    store.disable(&disabled_id).unwrap();
    fx.clock.advance(2 * HOUR);
    let run = query("jobs:run");
    // Every policy check would fail: wrong project and environment, bad IP, referrer,
    // endpoint, and a permission the viewer role lacks.
    let hostile = |key| hostile(key, &run);
    for (key, code) in [
        (revoked.as_str(), Code::Revoked),
        (disabled.as_str(), Code::Disabled),
        (expiring.as_str(), Code::Expired),
    ] {
        let d = check(&store, &hostile(key));
        assert_eq!(d.code, code, "{d:?}");
        assert_eq!(d.http_status(), 401);
        assert_eq!(d.forbidden, None, "{code:?} is decided before any restriction");
        // Also without pins, with no IP at all.
        let d = check(&store, &VerifyRequest::new(key));
        assert_eq!((d.code, d.forbidden), (code, None));
    }
    // A malformed key never reaches the lookup, let alone the policy.
    let mut typo = revoked.clone();
    typo.push('x');
    for garbage in ["", "garbage", "sk_live_", typo.as_str()] {
        let d = check(&store, &hostile(garbage));
        assert_eq!(d.code, Code::Malformed, "{garbage:?}: {d:?}");
        assert!(d.malformed.is_some());
        assert!(d.key.is_none() && d.forbidden.is_none() && d.role.is_none(), "{d:?}");
    }
    // A well-formed key that is not in the store is NOT_FOUND, not FORBIDDEN.
    let stranger = Format::default_for(Env::Live).generate();
    let d = check(&store, &hostile(stranger.expose()));
    assert_eq!(d.code, Code::NotFound);
    assert!(d.key.is_none() && d.forbidden.is_none() && d.role.is_none(), "{d:?}");
}

#[test]
fn denied_requests_consume_no_rate_limit_or_budget() {
    let fx = Fixture::new();
    let store = fx.init();
    let (key, _) = create(
        &store,
        NewKey::new("metered")
            .project("acme")
            .role(role("viewer"))
            .allow_ips(IpAllowlist::new(["10.0.0.0/8"]).unwrap())
            .rate_limit(RateLimit::new("hourly", 3, 3_600_000).unwrap())
            .budget(Budget::new(100, Period::Total).unwrap()),
    );
    let run = query("jobs:run");
    let read = query("docs:read");
    let inside = ip("10.0.0.1");
    for _ in 0..20 {
        // FORBIDDEN: a bad IP, no IP, a pinned project or environment of another key.
        for req in [
            VerifyRequest::new(&key).cost(7).ip(ip("8.8.8.8")),
            VerifyRequest::new(&key).cost(7),
            VerifyRequest::new(&key).cost(7).ip(inside).project("other"),
            VerifyRequest::new(&key).cost(7).ip(inside).env(Env::Test),
        ] {
            assert_eq!(check(&store, &req).code, Code::Forbidden);
        }
        // INSUFFICIENT_PERMISSIONS.
        assert_insufficient(&check(
            &store,
            &VerifyRequest::new(&key).cost(7).ip(inside).require(&run),
        ));
    }
    // The first request that passes sees the whole limit and the whole budget.
    let d = check(&store, &VerifyRequest::new(&key).cost(7).ip(inside).require(&read));
    assert_valid(&d);
    assert_eq!(d.ratelimits.len(), 1);
    assert_eq!((d.ratelimits[0].limit, d.ratelimits[0].remaining), (3, 2), "{d:?}");
    let budget = d.budget.as_ref().expect("a budget");
    assert_eq!((budget.cap, budget.spent, budget.remaining), (100, 7, 93));
    // And the limit really is 3: two more pass, the fourth is rate limited.
    for remaining in [1, 0] {
        let d = check(&store, &VerifyRequest::new(&key).cost(1).ip(inside));
        assert_valid(&d);
        assert_eq!(d.ratelimits[0].remaining, remaining);
    }
    assert_eq!(
        check(&store, &VerifyRequest::new(&key).ip(inside)).code,
        Code::RateLimited
    );
    // Still FORBIDDEN (not RATE_LIMITED) for a request that fails the policy.
    assert_forbidden(
        &check(&store, &VerifyRequest::new(&key).ip(ip("8.8.8.8"))),
        Forbidden::Ip,
    );
    assert_insufficient(&check(&store, &VerifyRequest::new(&key).ip(inside).require(&run)));
}

// ---------------------------------------------------------------------------------------
// Roles and permissions

#[test]
fn built_in_roles_and_extra_permissions_answer_queries() {
    let fx = Fixture::new();
    let store = fx.init();
    let builtins: Vec<(String, Vec<String>)> = store
        .roles()
        .iter()
        .map(|r| {
            let p = r.permissions().permissions().iter().map(|p| p.to_string()).collect();
            (r.name().to_string(), p)
        })
        .collect();
    assert_eq!(
        builtins,
        [
            ("admin".to_string(), vec!["*".to_string()]),
            ("member".to_string(), vec!["*:read".to_string(), "*:run".to_string()]),
            ("viewer".to_string(), vec!["*:read".to_string()]),
        ]
    );
    // A service account with the admin role is an admin key, which customer verification
    // refuses (issue 17, item 14): the admin role's permissions are asked of a personal
    // token whose user is an admin of the project.
    store.set_user(user("root", &[("default", "admin")])).unwrap();
    let (admin, _) = create(&store, NewKey::new("admin").personal("root"));
    let (member, _) = create(&store, NewKey::new("member").role(role("member")));
    let (default, _) = create(&store, NewKey::new("default role"));
    let (viewer, _) = create(&store, NewKey::new("viewer").role(role("viewer")));
    let (extra, _) = create(
        &store,
        NewKey::new("viewer plus")
            .role(role("viewer"))
            .permissions(perms(&["docs:write", "billing:*"])),
    );
    //  query                                              admin  member viewer extra
    let table: &[(&str, [bool; 4])] = &[
        ("docs:read", [true, true, true, true]),
        ("jobs:run", [true, true, false, false]),
        ("docs:write", [true, false, false, true]),
        ("billing:refund", [true, false, false, true]),
        ("billing:*", [true, false, false, true]),
        ("docs:*", [true, false, false, false]),
        ("*", [true, false, false, false]),
        ("users:delete", [true, false, false, false]),
        ("docs:read AND jobs:run", [true, true, false, false]),
        ("docs:write OR jobs:run", [true, true, false, true]),
        ("docs:write AND jobs:run", [true, false, false, false]),
        ("(docs:read OR docs:write) AND jobs:run", [true, true, false, false]),
        ("(docs:read OR docs:write) AND users:view", [true, false, false, false]),
        ("docs:read AND (docs:write OR billing:pay)", [true, false, false, true]),
        // AND binds tighter than OR.
        ("docs:read OR users:delete AND jobs:run", [true, true, true, true]),
        ("(docs:read OR users:delete) AND jobs:run", [true, true, false, false]),
        ("users:delete AND jobs:run OR docs:write", [true, false, false, true]),
        (
            "((docs:read)) and (jobs:run or (docs:write and billing:x))",
            [true, true, false, true],
        ),
    ];
    for (q, expected) in table {
        for ((key, name), allowed) in [admin.as_str(), member.as_str(), viewer.as_str(), extra.as_str()]
            .into_iter()
            .zip(["admin", "member", "viewer", "viewer"])
            .zip(expected)
        {
            let d = require(&store, key, q);
            if *allowed {
                assert_valid(&d);
            } else {
                assert_insufficient(&d);
            }
            assert_eq!(role_of(&d), Some(name), "{q}");
        }
        // A key created without a role is a member.
        assert_eq!(
            require(&store, &default, q).code,
            require(&store, &member, q).code,
            "{q}"
        );
    }
    assert_eq!(role_of(&require(&store, &default, "docs:read")), Some("member"));
}

#[test]
fn changing_a_custom_role_changes_its_keys_at_once() {
    let fx = Fixture::new();
    let store = fx.init();
    store
        .set_role(custom_role("support", &["tickets:read", "tickets:write"]))
        .unwrap();
    assert!(store.roles().iter().any(|r| r.name().as_str() == "support"));
    let (warm, warm_id) = create(&store, NewKey::new("warm").role(role("support")));
    let (cold, _) = create(&store, NewKey::new("cold").role(role("support")));
    let (extra, _) = create(
        &store,
        NewKey::new("extra")
            .role(role("support"))
            .permissions(perms(&["tickets:delete"])),
    );
    for key in [&warm, &extra] {
        let d = require(&store, key, "tickets:read AND tickets:write");
        assert_valid(&d);
        assert_eq!(role_of(&d), Some("support"));
        assert_insufficient(&require(&store, key, "docs:read"));
    }
    assert_valid(&require(&store, &extra, "tickets:delete"));
    assert_insufficient(&require(&store, &warm, "tickets:delete"));

    // Narrow the role: keys already verified (cached) and keys never verified alike.
    store.set_role(custom_role("support", &["tickets:read"])).unwrap();
    for key in [&warm, &cold, &extra] {
        assert_insufficient(&require(&store, key, "tickets:write"));
        assert_valid(&require(&store, key, "tickets:read"));
    }
    // The key's own extra permissions are kept.
    assert_valid(&require(&store, &extra, "tickets:delete"));
    // Widen it again.
    store
        .set_role(custom_role("support", &["tickets:*", "docs:read"]))
        .unwrap();
    for key in [&warm, &cold, &extra] {
        assert_valid(&require(&store, key, "tickets:write AND docs:read"));
    }
    // Moving a key to another role, and changing its extra permissions.
    store
        .update(
            &warm_id,
            KeyUpdate {
                role: Some(role("viewer")),
                permissions: Some(perms(&["jobs:run"])),
                ..Default::default()
            },
        )
        .unwrap();
    let d = require(&store, &warm, "docs:read AND jobs:run");
    assert_valid(&d);
    assert_eq!(role_of(&d), Some("viewer"));
    assert_insufficient(&require(&store, &warm, "tickets:write"));
}

// ---------------------------------------------------------------------------------------
// Personal tokens

#[test]
fn a_personal_token_acts_with_its_users_current_role() {
    let fx = Fixture::new();
    let store = fx.init();
    store.set_role(custom_role("support", &["tickets:read"])).unwrap();
    store
        .set_user(user("alice@example.com", &[("acme", "member"), ("beta", "viewer")]))
        .unwrap();
    let created = store
        .create(
            NewKey::new("alice's token")
                .project("acme")
                .personal("alice@example.com")
                .permissions(perms(&["billing:read"])),
        )
        .unwrap();
    let token = created.key.expose().to_string();
    assert_eq!(
        created.record.kind,
        KeyKind::Personal {
            user: "alice@example.com".into()
        }
    );
    assert_eq!(created.record.role, None, "a personal token has no role of its own");

    let d = require(&store, &token, "jobs:run");
    assert_valid(&d);
    assert_eq!(role_of(&d), Some("member"));
    // Demoted: the very next verify has lost `run`.
    store
        .set_user(user("alice@example.com", &[("acme", "viewer"), ("beta", "viewer")]))
        .unwrap();
    let d = require(&store, &token, "jobs:run");
    assert_insufficient(&d);
    assert_eq!(role_of(&d), Some("viewer"));
    assert_valid(&require(&store, &token, "docs:read"));
    // The token's own extra permissions still count.
    assert_valid(&require(&store, &token, "billing:read AND docs:read"));
    // Promoted.
    store.set_user(user("alice@example.com", &[("acme", "admin")])).unwrap();
    let d = require(&store, &token, "*");
    assert_valid(&d);
    assert_eq!(role_of(&d), Some("admin"));
    // A custom role, followed as it changes.
    store
        .set_user(user("alice@example.com", &[("acme", "support")]))
        .unwrap();
    assert_valid(&require(&store, &token, "tickets:read"));
    assert_insufficient(&require(&store, &token, "tickets:write"));
    store
        .set_role(custom_role("support", &["tickets:read", "tickets:write"]))
        .unwrap();
    let d = require(&store, &token, "tickets:write");
    assert_valid(&d);
    assert_eq!(role_of(&d), Some("support"));
    // Membership of another project only: FORBIDDEN, naming the membership (issue 17,
    // item 4: it used to say `project`, as if the request had pinned another project),
    // pinned or not.
    store.set_user(user("alice@example.com", &[("beta", "admin")])).unwrap();
    let d = check(&store, &VerifyRequest::new(&token));
    assert_forbidden(&d, Forbidden::NotAMember);
    assert_eq!(d.role, None);
    assert_forbidden(
        &check(&store, &VerifyRequest::new(&token).project("acme")),
        Forbidden::NotAMember,
    );
    assert_forbidden(&require(&store, &token, "docs:read"), Forbidden::NotAMember);
    // A pinned project that is not the key's is still `project`.
    assert_forbidden(
        &check(&store, &VerifyRequest::new(&token).project("beta")),
        Forbidden::Project,
    );
    // Back in the project: the token works again.
    store
        .set_user(user("alice@example.com", &[("acme", "viewer")]))
        .unwrap();
    assert_valid(&require(&store, &token, "docs:read"));
    // The user removed: FORBIDDEN(UserRemoved).
    store.remove_user("alice@example.com").unwrap();
    assert!(store.users().is_empty());
    let d = check(&store, &VerifyRequest::new(&token).project("acme"));
    assert_forbidden(&d, Forbidden::UserRemoved);
    assert_eq!(d.role, None);
    // A removed user cannot be removed twice.
    assert_eq!(
        state_error(&store, || store.remove_user("alice@example.com")),
        StateError::UnknownUser("alice@example.com".into())
    );
}

/// Phases of [`a_demotion_is_seen_by_every_thread_on_the_next_verify`], published by the
/// main thread only after the change of the phase returned.
const MEMBER: usize = 0;
const DEMOTED: usize = 1;
const REMOVED: usize = 2;
const STOP: usize = 3;

/// Publishes [`STOP`] when dropped.
struct StopOnDrop<'a>(&'a AtomicUsize);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(STOP, Ordering::SeqCst);
    }
}

#[test]
fn a_demotion_is_seen_by_every_thread_on_the_next_verify() {
    const THREADS: usize = 4;
    const VERIFIES_PER_PHASE: usize = 200;
    let fx = Fixture::new();
    let store = fx.init();
    store.set_user(user("bob", &[("acme", "member")])).unwrap();
    let shared_token = create(&store, NewKey::new("bob's token").project("acme").personal("bob")).0;
    // Each thread also has a token of its own, which only it verifies.
    let own_tokens: Vec<String> = (0..THREADS)
        .map(|i| create(&store, NewKey::new(format!("bob {i}")).project("acme").personal("bob")).0)
        .collect();
    let phase = AtomicUsize::new(MEMBER);
    // Set just before the removal starts: a verify in phase DEMOTED may see it.
    let removing = AtomicBool::new(false);
    let passed_as_member = AtomicUsize::new(0);
    // Verifies per thread in phase DEMOTED (index i) and REMOVED (index THREADS + i).
    let seen: Vec<AtomicUsize> = (0..2 * THREADS).map(|_| AtomicUsize::new(0)).collect();
    let start = Barrier::new(THREADS + 1);
    let run = query("jobs:run");

    let verifier = |i: usize| {
        let mut passed = false;
        start.wait();
        loop {
            for key in [shared_token.as_str(), own_tokens[i].as_str()] {
                // The phase is read before the verify starts, so a verify in phase n
                // started after the change of phase n returned.
                let now = phase.load(Ordering::SeqCst);
                let d = match now {
                    STOP => return,
                    _ => store.verify_with(&VerifyRequest::new(key).require(&run)).unwrap(),
                };
                match now {
                    MEMBER => {
                        if d.is_valid() && !passed {
                            passed = true;
                            passed_as_member.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Demoted: never valid again. FORBIDDEN only once the removal began.
                    DEMOTED if d.code == Code::Forbidden && removing.load(Ordering::SeqCst) => {
                        assert_eq!(d.forbidden, Some(Forbidden::UserRemoved), "thread {i}");
                    }
                    DEMOTED => {
                        assert_eq!(d.code, Code::InsufficientPermissions, "thread {i} after the demotion");
                        assert_eq!(role_of(&d), Some("viewer"), "thread {i}");
                    }
                    _ => {
                        let got = (d.code, d.forbidden);
                        assert_eq!(
                            got,
                            (Code::Forbidden, Some(Forbidden::UserRemoved)),
                            "thread {i} after the removal"
                        );
                        assert_eq!(d.role, None, "thread {i}");
                    }
                }
                if now != MEMBER {
                    seen[(now - 1) * THREADS + i].fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };

    let completed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS).map(|i| s.spawn(move || verifier(i))).collect();
        // Stops the verifiers however this thread leaves the scope, a panic included.
        let _stop = StopOnDrop(&phase);
        start.wait();
        // Spins until `done`; false if a verifier stopped (failed) first.
        let wait_for = |done: &dyn Fn() -> bool| {
            while !done() {
                if handles.iter().any(|h| h.is_finished()) {
                    return false;
                }
                std::thread::yield_now();
            }
            true
        };
        let seen = &seen;
        let enough = |range: std::ops::Range<usize>| {
            move || {
                seen[range.clone()]
                    .iter()
                    .all(|n| n.load(Ordering::SeqCst) >= VERIFIES_PER_PHASE)
            }
        };
        let mut alive = wait_for(&|| passed_as_member.load(Ordering::SeqCst) == THREADS);
        if alive {
            store.set_user(user("bob", &[("acme", "viewer")])).unwrap();
            phase.store(DEMOTED, Ordering::SeqCst);
            alive = wait_for(&enough(0..THREADS));
        }
        if alive {
            removing.store(true, Ordering::SeqCst);
            store.remove_user("bob").unwrap();
            phase.store(REMOVED, Ordering::SeqCst);
            alive = wait_for(&enough(THREADS..2 * THREADS));
        }
        // A verifier's failed assertion propagates out of the scope as a panic.
        alive
    });
    assert!(completed, "a verifying thread stopped early");
    assert_eq!(passed_as_member.load(Ordering::SeqCst), THREADS);
}

/// Issue 17, item 4: a personal token for a user who is not a member of its project was
/// created, then refused forever as `project`; after `remove_user`, the same misleading
/// reason. The create is refused with a typed error and writes nothing; a verify names
/// the real reason.
#[test]
fn a_personal_token_needs_a_membership_and_its_refusals_name_the_real_reason() {
    let fx = Fixture::new();
    let store = fx.init();
    create(&store, NewKey::new("first"));
    store.set_user(user("erin", &[("beta", "member")])).unwrap();
    let before = store.events(&Default::default()).unwrap().len();
    let keys = store.list(&ListFilter::default()).unwrap().len();
    // Not a member of acme: refused, in every format (a refused create registers none).
    for format in [Format::default_for(Env::Live), Format::default_for(Env::Test)] {
        let err = state_error(&store, || {
            store.create(
                NewKey::new("erin's")
                    .project("acme")
                    .personal("erin")
                    .format(format.clone()),
            )
        });
        assert_eq!(
            err,
            StateError::NotAMember {
                user: "erin".into(),
                project: "acme".into()
            }
        );
        assert!(err.to_string().contains("not a member of project \"acme\""), "{err}");
    }
    // The default project too, when none is given.
    assert!(matches!(
        state_error(&store, || store.create(NewKey::new("erin's").personal("erin"))),
        StateError::NotAMember { .. }
    ));
    assert_eq!(store.events(&Default::default()).unwrap().len(), before);
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), keys);
    // A member may have one.
    let (token, _) = create(&store, NewKey::new("erin's").project("beta").personal("erin"));
    assert_valid(&check(&store, &VerifyRequest::new(&token)));
    // Moved to another project: the token names the membership it lacks.
    store.set_user(user("erin", &[("gamma", "member")])).unwrap();
    let d = check(&store, &VerifyRequest::new(&token));
    assert_forbidden(&d, Forbidden::NotAMember);
    assert_eq!(d.forbidden.map(Forbidden::as_str), Some("not_a_member"));
    // Removed: the token names the removal, also across a reopen and a rebuild.
    store.remove_user("erin").unwrap();
    assert_forbidden(&check(&store, &VerifyRequest::new(&token)), Forbidden::UserRemoved);
    store.close().unwrap();
    let store = fx.open();
    assert_forbidden(&check(&store, &VerifyRequest::new(&token)), Forbidden::UserRemoved);
    store.close().unwrap();
    Store::rebuild(&fx.path, fx.config.clone()).unwrap();
    let store = fx.open();
    let d = check(&store, &VerifyRequest::new(&token));
    assert_forbidden(&d, Forbidden::UserRemoved);
    assert_eq!(d.forbidden.map(Forbidden::as_str), Some("user_removed"));
}

#[test]
fn personal_tokens_need_a_known_user_and_no_role() {
    let fx = Fixture::new();
    let store = fx.init();
    // Warm the store up so the refused creates cannot hide behind a first format event.
    create(&store, NewKey::new("first"));
    assert_eq!(
        state_error(&store, || store
            .create(NewKey::new("ghost").project("acme").personal("ghost"))),
        StateError::UnknownUser("ghost".into())
    );
    // A new format must not be registered by a refused create either.
    let test_format = Format::default_for(Env::Test);
    assert_eq!(
        state_error(&store, || store
            .create(NewKey::new("ghost").personal("ghost").format(test_format.clone()))),
        StateError::UnknownUser("ghost".into())
    );
    store.set_user(user("carol", &[("acme", "member")])).unwrap();
    let err = input_error(&store, || {
        store.create(
            NewKey::new("with a role")
                .project("acme")
                .personal("carol")
                .role(role("viewer")),
        )
    });
    assert!(matches!(err, InputError::KeyType(_)), "{err:?}");
    let err = input_error(&store, || store.create(NewKey::new("no user").personal("")));
    assert!(matches!(err, InputError::InvalidUser(_)), "{err:?}");
    let err = input_error(&store, || store.create(NewKey::new("bad user").personal("carol smith")));
    assert!(matches!(err, InputError::InvalidUser(_)), "{err:?}");
    // A personal token's role cannot be set by an update either.
    let (_, id) = create(&store, NewKey::new("carol's").project("acme").personal("carol"));
    let err = input_error(&store, || {
        store.update(
            &id,
            KeyUpdate {
                role: Some(role("admin")),
                ..Default::default()
            },
        )
    });
    assert!(matches!(err, InputError::KeyType(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Sensitive operations

#[test]
fn admin_keys_need_an_admin_key_when_the_store_requires_one() {
    let fx = Fixture::new();
    // Bootstrap: an admin key issued before the store required one.
    let store = fx.init();
    let (admin, _) = create(
        &store,
        NewKey::new("root")
            .role(role("admin"))
            .rate_limit(RateLimit::new("hourly", 1, 3_600_000).unwrap())
            .budget(Budget::new(1, Period::Total).unwrap()),
    );
    let (second_admin, second_admin_id) = create(&store, NewKey::new("second root").role(role("admin")));
    let (disabled_admin, disabled_admin_id) = create(&store, NewKey::new("off").role(role("admin")));
    let (member, member_id) = create(&store, NewKey::new("member").role(role("member")));
    store.close().unwrap();

    let config = fx.config.clone().require_admin(true);
    let store = Store::open(&fx.path, config).unwrap();
    store.revoke(&second_admin_id, None).unwrap();
    store.disable(&disabled_admin_id).unwrap();
    let new_admin = || NewKey::new("new root").role(role("admin"));
    assert_eq!(
        state_error(&store, || store.create(new_admin())),
        StateError::AdminRequired("creating an admin key")
    );
    // Giving an existing key the admin role is the same thing.
    assert!(matches!(
        state_error(&store, || store.update(
            &member_id,
            KeyUpdate {
                role: Some(role("admin")),
                ..Default::default()
            }
        )),
        StateError::AdminRequired(_)
    ));
    // Other keys need no admin key.
    create(&store, NewKey::new("a viewer").role(role("viewer")));
    // Not on the authority of a member key, a revoked or disabled admin key, or garbage.
    let stranger = Format::default_for(Env::Live).generate();
    for (what, key) in [
        ("member", member.as_str()),
        ("revoked admin", second_admin.as_str()),
        ("disabled admin", disabled_admin.as_str()),
        ("unknown", stranger.expose()),
        ("garbage", "garbage"),
        ("empty", ""),
    ] {
        let err = state_error(&store, || store.create_as(key, new_admin()));
        assert!(matches!(err, StateError::AdminRequired(_)), "{what}: {err:?}");
    }
    // A valid admin key may, more than once, and is not charged for it: its rate limit
    // (1 per hour) and budget (1) are still whole afterwards.
    for _ in 0..3 {
        let created = store
            .create_as(&admin, new_admin())
            .expect("create_as with an admin key");
        assert_eq!(created.record.role, Some(role("admin")));
        // An admin key verifies for the management API only (issue 17, item 14).
        let everything = query("*");
        let d = store
            .verify_admin(&VerifyRequest::new(created.key.expose()).require(&everything))
            .unwrap();
        assert_valid(&d);
        assert_eq!(role_of(&d), Some("admin"));
    }
    let d = store.verify_admin(&VerifyRequest::new(&admin)).unwrap();
    assert_valid(&d);
    assert_eq!(
        d.ratelimits[0].remaining, 0,
        "the one request of the hour was still there"
    );
    assert_eq!(d.budget.as_ref().map(|b| b.spent), Some(1));
}

/// With `require_admin`, a caller without an admin key must not get a key that can do
/// everything by another road than the `admin` role: extra permission `*` on a member key,
/// or a custom role granting `*`. Either the create is refused (`AdminRequired`), or the
/// key it gives is no admin key for [`Store::create_as`], whose contract is "a key of this
/// store with the `admin` role". (A personal token of a user who is admin in the project
/// does act with the admin role; whether creating one needs an admin key is left open.)
#[test]
fn require_admin_cannot_be_sidestepped_by_an_admin_equivalent_key() {
    let fx = Fixture::new();
    let store = Store::init(&fx.path, fx.config.clone().require_admin(true)).unwrap();
    store.set_role(custom_role("root", &["*"])).unwrap();
    let roads = [
        (
            "a member key with extra permission *",
            NewKey::new("m").permissions(perms(&["*"])),
        ),
        (
            "a member key with extra permission *:*",
            NewKey::new("m").permissions(perms(&["*:*"])),
        ),
        (
            "a key with a custom role granting *",
            NewKey::new("r").role(role("root")),
        ),
    ];
    let mut escalations = Vec::new();
    for (road, new) in roads {
        let created = match store.create(new) {
            Ok(created) => created,
            Err(Error::State(StateError::AdminRequired(_))) => continue,
            Err(e) => panic!("{road}: {e:?}"),
        };
        let minted = store.create_as(created.key.expose(), NewKey::new("minted").role(role("admin")));
        if let Ok(admin) = minted {
            escalations.push(format!(
                "{road}: created without an admin key, then accepted by create_as, which issued admin key {}",
                admin.record.id
            ));
        }
    }
    assert!(
        escalations.is_empty(),
        "require_admin sidestepped:\n{}",
        escalations.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_policy_input_is_refused_and_writes_nothing() {
    let fx = Fixture::new();
    let store = fx.init();
    store.set_role(custom_role("support", &["tickets:read"])).unwrap();
    store.set_user(user("dave", &[("acme", "support")])).unwrap();
    let (_, id) = create(&store, NewKey::new("service").project("acme"));

    // Invalid CIDR, glob, endpoint and referrer entries are refused when parsed.
    for entry in [
        "10.0.0.0/33",
        "300.1.2.3",
        "10.0.0.0/",
        "2001:db8::/129",
        "example.com",
        "",
    ] {
        let before = snapshot(&store);
        assert!(
            matches!(IpAllowlist::new(["10.0.0.0/8", entry]), Err(InputError::InvalidCidr(_))),
            "{entry:?}"
        );
        assert_eq!(snapshot(&store), before);
    }
    for entry in ["GET /v1/***", "GET v1/users", "GET /v1/a**", "GET /v1/users?x=1"] {
        match EndpointAllowlist::new([entry]) {
            Err(InputError::InvalidGlob(msg)) => assert!(!msg.is_empty()),
            other => panic!("{entry:?} gave {other:?}"),
        }
    }
    for entry in ["/v1/users", "GET", "G3T /v1", ""] {
        assert!(
            matches!(EndpointAllowlist::new([entry]), Err(InputError::InvalidEndpoint(_))),
            "{entry:?}"
        );
    }
    for entry in [
        "https://example.com",
        "*example.com",
        "example.com:8080",
        "a.*.example.com",
        "*",
        "",
    ] {
        assert!(
            matches!(ReferrerAllowlist::new([entry]), Err(InputError::InvalidReferrer(_))),
            "{entry:?}"
        );
    }
    // Unbalanced or otherwise broken queries are refused before a verify.
    for q in [
        "(a:b",
        "a:b)",
        "(a:b OR c:d",
        "a:b AND",
        "OR a:b",
        "()",
        "",
        "a:b c:d",
        "Docs:read",
    ] {
        match PermissionQuery::parse(q) {
            Err(InputError::InvalidQuery(msg)) => assert!(!msg.is_empty(), "{q:?}"),
            other => panic!("{q:?} gave {other:?}"),
        }
    }
    let long = "r".repeat(33);
    for name in ["Admin", "", "a b", "r.x", long.as_str()] {
        assert!(
            matches!(RoleName::parse(name), Err(InputError::InvalidRole(_))),
            "{name:?}"
        );
    }

    // Unknown roles on create, update and set_user.
    assert_eq!(
        state_error(&store, || store.create(NewKey::new("x").role(role("nope")))),
        StateError::UnknownRole("nope".into())
    );
    assert_eq!(
        state_error(&store, || store.update(
            &id,
            KeyUpdate {
                role: Some(role("nope")),
                name: Some("renamed".into()),
                ..Default::default()
            }
        )),
        StateError::UnknownRole("nope".into())
    );
    assert_eq!(
        state_error(&store, || store
            .set_user(user("erin", &[("acme", "viewer"), ("beta", "nope")]))),
        StateError::UnknownRole("nope".into())
    );
    assert_eq!(
        state_error(&store, || store.set_user(user("dave", &[("acme", "nope")]))),
        StateError::UnknownRole("nope".into())
    );
    let mut bad_project = user("erin", &[]);
    bad_project.memberships.insert("no spaces".into(), role("viewer"));
    assert!(matches!(
        input_error(&store, || store.set_user(bad_project.clone())),
        InputError::InvalidProject(_)
    ));
    // Built-in roles cannot be replaced or deleted; a role in use cannot be deleted.
    for name in ["admin", "member", "viewer"] {
        assert!(matches!(
            state_error(&store, || store.delete_role(name)),
            StateError::RoleInUse(..)
        ));
        assert!(matches!(
            state_error(&store, || store.set_role(custom_role(name, &["*"]))),
            StateError::RoleInUse(..)
        ));
    }
    store.set_role(custom_role("ops", &["jobs:run"])).unwrap();
    let (_, ops_key) = create(&store, NewKey::new("ops").role(role("ops")));
    assert!(matches!(
        state_error(&store, || store.delete_role("ops")),
        StateError::RoleInUse(..)
    ));
    assert!(matches!(
        state_error(&store, || store.delete_role("support")),
        StateError::RoleInUse(..)
    ));
    assert_eq!(
        state_error(&store, || store.delete_role("nope")),
        StateError::UnknownRole("nope".into())
    );
    // Once nothing has it, it can go; then it is unknown.
    store
        .update(
            &ops_key,
            KeyUpdate {
                role: Some(role("viewer")),
                ..Default::default()
            },
        )
        .unwrap();
    store.delete_role("ops").unwrap();
    assert!(!store.roles().iter().any(|r| r.name().as_str() == "ops"));
    assert_eq!(
        state_error(&store, || store.create(NewKey::new("x").role(role("ops")))),
        StateError::UnknownRole("ops".into())
    );
    store.set_user(user("dave", &[("acme", "viewer")])).unwrap();
    store.delete_role("support").unwrap();
}

// ---------------------------------------------------------------------------------------
// Persistence

/// What the store says about its roles, users and restricted keys.
fn policy_state(store: &Store, keys: &[(&str, &str)]) -> Vec<String> {
    let mut out: Vec<String> = store
        .roles()
        .iter()
        .map(|r| format!("role {} {:?}", r.name(), r.permissions()))
        .collect();
    out.extend(store.users().iter().map(|u| format!("user {u:?}")));
    for info in store.list(&ListFilter::default()).unwrap() {
        let r = &info.record;
        out.push(format!(
            "key {} {} {:?} {:?} {:?} {:?} {:?} {:?}",
            r.name, r.project, r.kind, r.role, r.permissions, r.allow_ips, r.allow_referrers, r.allow_endpoints
        ));
    }
    // And how the store decides requests with them.
    let inside = ip("::ffff:10.9.8.7");
    let q = query("(tickets:write OR billing:x) AND docs:read");
    for (name, key) in keys {
        let requests = [
            VerifyRequest::new(key).cost(0),
            VerifyRequest::new(key).cost(0).ip(inside),
            VerifyRequest::new(key)
                .cost(0)
                .ip(inside)
                .referrer("https://app.example.com/")
                .endpoint("GET", "/v1/users/1"),
            VerifyRequest::new(key)
                .cost(0)
                .ip(inside)
                .referrer("https://app.example.com/")
                .endpoint("GET", "/v1/users/1")
                .require(&q),
        ];
        for req in requests {
            let d = check(store, &req);
            out.push(format!("{name}: {:?} {:?} {:?}", d.code, d.forbidden, d.role));
        }
    }
    out
}

#[test]
fn roles_users_and_restrictions_survive_reopen_and_rebuild() {
    let fx = Fixture::new();
    let store = fx.init();
    store
        .set_role(custom_role("support", &["tickets:read", "tickets:write", "docs:read"]))
        .unwrap();
    store.set_role(custom_role("gone", &["x:y"])).unwrap();
    store.delete_role("gone").unwrap();
    store.set_role(custom_role("narrowed", &["*"])).unwrap();
    store.set_role(custom_role("narrowed", &["docs:read"])).unwrap();
    store.set_user(user("frank", &[("acme", "member")])).unwrap();
    store
        .set_user(user("frank", &[("acme", "support"), ("beta", "viewer")]))
        .unwrap();
    store.set_user(user("gina", &[("acme", "admin")])).unwrap();
    let (gina, _) = create(&store, NewKey::new("gina's").project("acme").personal("gina"));
    store.remove_user("gina").unwrap();
    store.set_user(user("hank", &[("beta", "narrowed")])).unwrap();
    let (service, service_id) = create(
        &store,
        NewKey::new("restricted")
            .project("acme")
            .role(role("support"))
            .permissions(perms(&["billing:x"]))
            .allow_ips(IpAllowlist::new(["10.0.0.0/8", "2001:db8::/32"]).unwrap())
            .allow_referrers(ReferrerAllowlist::new(["*.example.com", "example.org"]).unwrap())
            .allow_endpoints(EndpointAllowlist::new(["GET /v1/users/*", "ANY /health"]).unwrap()),
    );
    let (frank, _) = create(&store, NewKey::new("frank's").project("acme").personal("frank"));
    let (updated, updated_id) = create(&store, NewKey::new("updated").project("beta"));
    store
        .update(
            &updated_id,
            KeyUpdate {
                role: Some(role("narrowed")),
                allow_ips: Some(IpAllowlist::new(["10.9.0.0/16"]).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    store.set_user(user("frank", &[("acme", "support")])).unwrap();
    let keys = [
        ("service", service.as_str()),
        ("frank", frank.as_str()),
        ("gina", gina.as_str()),
        ("updated", updated.as_str()),
    ];
    let before = policy_state(&store, &keys);
    // Sanity: the state is what was set.
    let roles: Vec<String> = store.roles().iter().map(|r| r.name().to_string()).collect();
    assert_eq!(roles, ["admin", "member", "narrowed", "support", "viewer"]);
    let users: Vec<String> = store.users().iter().map(|u| u.id.clone()).collect();
    assert_eq!(users, ["frank", "hank"]);
    let record = store.get(&service_id).unwrap().record;
    assert_eq!(record.allow_ips.sources(), ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(record.allow_referrers.sources(), ["*.example.com", "example.org"]);
    assert_eq!(record.allow_endpoints.sources(), ["GET /v1/users/*", "ANY /health"]);
    assert!(
        before.contains(&"service: Valid None Some(RoleName(\"support\"))".to_string()),
        "{before:#?}"
    );
    assert!(
        before.contains(&"service: Forbidden Some(Ip) Some(RoleName(\"support\"))".to_string()),
        "{before:#?}"
    );
    assert!(
        before.contains(&"updated: InsufficientPermissions None Some(RoleName(\"narrowed\"))".to_string()),
        "{before:#?}"
    );
    store.close().unwrap();

    let store = fx.open();
    assert_eq!(policy_state(&store, &keys), before, "after reopen");
    store.close().unwrap();

    Store::rebuild(&fx.path, fx.config.clone()).unwrap();
    let store = fx.open();
    assert_eq!(policy_state(&store, &keys), before, "after rebuild");
    // And the store keeps working on the rebuilt index.
    store.set_user(user("frank", &[("acme", "viewer")])).unwrap();
    assert_eq!(role_of(&require(&store, &frank, "docs:read")), Some("viewer"));
    store.close().unwrap();
}
