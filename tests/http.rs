//! The HTTP layer and the `credstore serve` sidecar, over real HTTP on loopback: every
//! outcome's status, headers and body; trusted proxies; concurrency; the example's routes;
//! the management API with and without an admin key; graceful shutdown.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use credstore::http::{ApiKeyLayer, RateLimitFields, TrustedProxies};
use credstore::policy::{EndpointAllowlist, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist, RoleName};
use credstore::{
    Budget, Clock, Code, Config, Decision, Expiry, KeyId, ManualClock, NewKey, Period, RateLimit, Store, VerifyRequest,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[path = "../examples/axum_server.rs"]
#[allow(dead_code)]
mod example;

/// 2025-06-15T12:00:00Z, where the manual clocks stand.
const NOW_MS: i64 = 1_749_988_800_000;
const NOW_SECS: u64 = 1_749_988_800;

// ---------------------------------------------------------------------------------------
// A small HTTP/1 client

/// An answer, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A request: method, path, headers, optional JSON body.
fn request(method: Method, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header("host", "localhost");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(body)).expect("request")
}

/// Sends requests over one connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The task driving the connection: it ends when the connection is closed.
    driver: tokio::task::JoinHandle<hyper::Result<()>>,
}

impl Conn {
    async fn to(addr: SocketAddr) -> Conn {
        Conn::over(TcpStream::connect(addr).await.expect("connect")).await
    }

    /// A connection from another loopback address (127.0.0.2 is a different peer).
    async fn from(local: &str, addr: SocketAddr) -> Conn {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{local}:0").parse().expect("addr")).expect("bind");
        Conn::over(socket.connect(addr).await.expect("connect")).await
    }

    async fn over(stream: TcpStream) -> Conn {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(conn);
        Conn { sender, driver }
    }

    /// Whether the server closes this connection within `limit` (this end keeps it open).
    async fn closed_by_server_within(self, limit: Duration) -> bool {
        let Conn { sender, driver } = self;
        let closed = tokio::time::timeout(limit, driver).await.is_ok();
        drop(sender);
        closed
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.expect("ready");
        let response = self.sender.send_request(req).await.expect("send");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }
}

/// One request on a fresh connection.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    Conn::to(addr).await.send(req).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Serves `router` on 127.0.0.1, port chosen by the system, with peer addresses.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .expect("serve");
    });
    addr
}

// ---------------------------------------------------------------------------------------
// Fixtures

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let config = Config::new().clock(Arc::clone(&clock) as Arc<dyn Clock>);
        let store = Arc::new(Store::init(dir.path().join("data"), config).expect("init"));
        Fixture {
            _dir: dir,
            store,
            clock,
        }
    }

    fn key(&self, new: NewKey) -> (String, KeyId) {
        let created = self.store.create(new).expect("create");
        (created.key.expose().to_string(), created.record.id)
    }

    fn layer(&self) -> ApiKeyLayer {
        ApiKeyLayer::new(Arc::clone(&self.store))
    }
}

/// What a handler saw of the decision.
async fn echo_decision(Extension(d): Extension<Decision>) -> Json<Value> {
    Json(json!({
        "code": d.code,
        "key_id": d.key.as_ref().map(|k| k.id.to_string()),
        "name": d.key.as_ref().map(|k| k.name.clone()),
        "remaining": d.ratelimits.first().map(|l| l.remaining),
        "budget_spent": d.budget.as_ref().map(|b| b.spent),
    }))
}

/// `/v1/hello` (cost 1), `/v1/docs` (requires docs:write), `/v1/render` (cost 10), and the
/// same three nested under `/api`.
fn api(auth: &ApiKeyLayer) -> Router {
    let docs = PermissionQuery::parse("docs:write").expect("query");
    let routes = || {
        Router::new()
            .route("/v1/hello", get(echo_decision).layer(auth.clone()))
            .route(
                "/v1/docs",
                post(echo_decision).layer(auth.clone().require(docs.clone())),
            )
            .route("/v1/render", post(echo_decision).layer(auth.clone().cost(10)))
    };
    routes().nest("/api", routes())
}

fn assert_problem(reply: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{reply:?}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let doc = reply.json();
    assert_eq!(doc["status"], status, "{doc}");
    assert_eq!(doc["code"], code, "{doc}");
    assert!(
        doc["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:credstore:problem:")),
        "{doc}"
    );
    assert!(doc["title"].as_str().is_some_and(|t| !t.is_empty()), "{doc}");
    assert!(doc["detail"].as_str().is_some_and(|t| !t.is_empty()), "{doc}");
    doc
}

/// The number in a header.
fn number(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {reply:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ---------------------------------------------------------------------------------------
// The layer: every outcome

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_is_the_same_answer_whatever_the_key() {
    let fx = Fixture::new();
    let (revoked, revoked_id) = fx.key(NewKey::new("revoked"));
    fx.store.revoke(&revoked_id, Some("leaked")).expect("revoke");
    let (disabled, disabled_id) = fx.key(NewKey::new("disabled"));
    fx.store.disable(&disabled_id).expect("disable");
    let (expired, _) = fx.key(NewKey::new("expired").expires(Expiry::In(1_000)));
    fx.clock.advance(2_000);
    // A well-formed key of another store: it passes the checksum, and is unknown here.
    let other = Fixture::new();
    let (unknown, _) = other.key(NewKey::new("elsewhere"));
    let malformed = "sk_live_definitely-not-a-key";
    let cases = [
        (malformed, Code::Malformed),
        (unknown.as_str(), Code::NotFound),
        (revoked.as_str(), Code::Revoked),
        (disabled.as_str(), Code::Disabled),
        (expired.as_str(), Code::Expired),
    ];
    for (key, code) in cases {
        assert_eq!(
            fx.store
                .verify_with(&VerifyRequest::new(key).cost(0))
                .expect("verify")
                .code,
            code
        );
    }
    let addr = serve(api(&fx.layer())).await;

    let missing = send(addr, request(Method::GET, "/v1/hello", &[], None)).await;
    let doc = assert_problem(&missing, 401, "UNAUTHORIZED");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_eq!(doc["type"], "urn:credstore:problem:unauthorized");
    assert_eq!(doc["title"], "Unauthorized");
    for (key, code) in cases {
        for header in ["authorization", "x-api-key"] {
            let value = if header == "authorization" {
                bearer(key)
            } else {
                key.to_string()
            };
            let reply = send(addr, request(Method::GET, "/v1/hello", &[(header, &value)], None)).await;
            assert_problem(&reply, 401, "UNAUTHORIZED");
            assert_eq!(reply.body, missing.body, "{code}: the body tells keys apart");
            let mut headers = reply.headers.clone();
            headers.remove("date");
            let mut expected = missing.headers.clone();
            expected.remove("date");
            assert_eq!(headers, expected, "{code}: the headers tell keys apart");
            assert!(reply.header("x-ratelimit-limit").is_none());
        }
    }
    // An Authorization header of another scheme is no key.
    let basic = send(
        addr,
        request(
            Method::GET,
            "/v1/hello",
            &[("authorization", "Basic Zm9vOmJhcg==")],
            None,
        ),
    )
    .await;
    assert_eq!(basic.body, missing.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_reaches_the_handler_with_its_decision_and_rate_limit_headers() {
    let fx = Fixture::new();
    let (key, id) = fx.key(
        NewKey::new("good")
            .rate_limit(RateLimit::parse("3/1h:hourly").expect("limit"))
            .budget(Budget::new(100, Period::Total).expect("budget")),
    );
    let addr = serve(api(&fx.layer())).await;

    let reply = send(
        addr,
        request(Method::GET, "/v1/hello", &[("authorization", &bearer(&key))], None),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = reply.json();
    assert_eq!(seen["code"], "VALID");
    assert_eq!(seen["key_id"], id.as_str());
    assert_eq!(seen["name"], "good");
    assert_eq!(seen["remaining"], 2);
    assert_eq!(seen["budget_spent"], 1);
    assert_eq!(number(&reply, "x-ratelimit-limit"), 3);
    assert_eq!(number(&reply, "x-ratelimit-remaining"), 2);
    // One request of three per hour: the limit is full again in 20 minutes.
    let reset = number(&reply, "x-ratelimit-reset");
    assert_eq!(reset, NOW_SECS + 1_200, "unix seconds");
    assert_eq!(reply.header("ratelimit-policy"), Some("\"hourly\";q=3;w=3600"));
    assert_eq!(reply.header("ratelimit"), Some("\"hourly\";r=2;t=1200"));
    assert!(reply.header("retry-after").is_none());

    // X-API-Key works as well; a route's cost is charged.
    let render = send(addr, request(Method::POST, "/v1/render", &[("x-api-key", &key)], None)).await;
    assert_eq!(render.status, 200, "{render:?}");
    assert_eq!(render.json()["budget_spent"], 11);
    assert_eq!(number(&render, "x-ratelimit-remaining"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_sends_the_rate_limit_fields_it_is_told_to() {
    const X: [&str; 3] = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"];
    const DRAFT: [&str; 2] = ["ratelimit-policy", "ratelimit"];
    let cases: [(RateLimitFields, &[&str]); 4] = [
        (RateLimitFields::Both, &[X[0], X[1], X[2], DRAFT[0], DRAFT[1]]),
        (RateLimitFields::XRateLimit, &X),
        (RateLimitFields::Draft, &DRAFT),
        (RateLimitFields::Off, &[]),
    ];
    for (fields, expected) in cases {
        let fx = Fixture::new();
        let (key, _) = fx.key(NewKey::new("limited").rate_limit(RateLimit::parse("1/1m:minute").expect("limit")));
        let addr = serve(api(&fx.layer().rate_limit_fields(fields))).await;
        let auth = bearer(&key);
        let mut conn = Conn::to(addr).await;
        let ok = conn
            .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
            .await;
        let denied = conn
            .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
            .await;
        assert_eq!((ok.status, denied.status), (200, 429), "{fields:?}");
        for reply in [&ok, &denied] {
            let mut sent: Vec<&str> = reply
                .headers
                .keys()
                .map(|name| name.as_str())
                .filter(|name| name.contains("ratelimit"))
                .collect();
            sent.sort_unstable();
            let mut want = expected.to_vec();
            want.sort_unstable();
            assert_eq!(sent, want, "{fields:?}, {}", reply.status);
        }
        assert_eq!(denied.header("retry-after"), Some("60"), "{fields:?}");
        if fields == RateLimitFields::XRateLimit {
            assert_eq!(number(&ok, "x-ratelimit-remaining"), 0);
        }
        if fields == RateLimitFields::Draft {
            assert_eq!(ok.header("ratelimit"), Some("\"minute\";r=0;t=60"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_key_gets_429_with_retry_after() {
    let fx = Fixture::new();
    let (key, _) = fx.key(NewKey::new("limited").rate_limit(RateLimit::parse("2/1m:minute").expect("limit")));
    let addr = serve(api(&fx.layer())).await;
    let auth = bearer(&key);
    let mut conn = Conn::to(addr).await;
    for left in [1, 0] {
        let ok = conn
            .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
            .await;
        assert_eq!(ok.status, 200);
        assert_eq!(number(&ok, "x-ratelimit-remaining"), left);
    }
    let denied = conn
        .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
        .await;
    let doc = assert_problem(&denied, 429, "RATE_LIMITED");
    assert_eq!(doc["type"], "urn:credstore:problem:rate-limited");
    assert_eq!(doc["limit"], "minute");
    let retry = number(&denied, "retry-after");
    assert_eq!(retry, 30, "one request of two per minute comes back in 30 s");
    assert_eq!(doc["retry_after"], retry);
    assert_eq!(number(&denied, "x-ratelimit-limit"), 2);
    assert_eq!(number(&denied, "x-ratelimit-remaining"), 0);
    assert_eq!(number(&denied, "x-ratelimit-reset"), NOW_SECS + 60);
    assert_eq!(denied.header("ratelimit-policy"), Some("\"minute\";q=2;w=60"));
    assert_eq!(denied.header("ratelimit"), Some("\"minute\";r=0;t=60"));

    // Once the window has moved on, the key passes again.
    fx.clock.advance(30_000);
    let again = conn
        .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
        .await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_gets_402() {
    let fx = Fixture::new();
    let (key, _) = fx.key(
        NewKey::new("spender")
            .budget(Budget::new(15, Period::Total).expect("budget"))
            .rate_limit(RateLimit::parse("100/1m:minute").expect("limit")),
    );
    let addr = serve(api(&fx.layer())).await;
    let auth = bearer(&key);
    let first = send(
        addr,
        request(Method::POST, "/v1/render", &[("authorization", &auth)], None),
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["budget_spent"], 10);
    let second = send(
        addr,
        request(Method::POST, "/v1/render", &[("authorization", &auth)], None),
    )
    .await;
    let doc = assert_problem(&second, 402, "BUDGET_EXHAUSTED");
    assert_eq!(doc["budget"]["cap"], 15);
    assert_eq!(doc["budget"]["spent"], 10);
    assert_eq!(doc["budget"]["remaining"], 5);
    // The refused request was not counted against the rate limit either.
    assert_eq!(number(&second, "x-ratelimit-remaining"), 99);
    assert!(second.header("retry-after").is_none());
    // A cheaper route still fits.
    let hello = send(
        addr,
        request(Method::GET, "/v1/hello", &[("authorization", &auth)], None),
    )
    .await;
    assert_eq!(hello.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrictions_and_permissions_get_403_naming_what_failed() {
    let fx = Fixture::new();
    let (member, _) = fx.key(NewKey::new("member"));
    let (writer, _) = fx.key(NewKey::new("writer").permissions(PermissionSet::parse(["docs:write"]).expect("perm")));
    let (endpoint_bound, _) = fx.key(
        NewKey::new("hello only").allow_endpoints(EndpointAllowlist::new(["GET /api/v1/hello"]).expect("endpoints")),
    );
    let (referrer_bound, _) =
        fx.key(NewKey::new("web").allow_referrers(ReferrerAllowlist::new(["*.example.com"]).expect("referrers")));
    let (ip_bound, _) = fx.key(NewKey::new("office").allow_ips(IpAllowlist::new(["192.0.2.0/24"]).expect("ips")));
    let (acme, _) = fx.key(NewKey::new("acme").project("acme"));
    let addr = serve(api(&fx.layer())).await;
    let call = |method: Method, path: &'static str, key: &str, extra: &[(&'static str, &'static str)]| {
        let auth = bearer(key);
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        let req = request(method, path, &headers, None);
        async move { send(addr, req).await }
    };

    let doc = assert_problem(
        &call(Method::POST, "/v1/docs", &member, &[]).await,
        403,
        "INSUFFICIENT_PERMISSIONS",
    );
    assert_eq!(doc["required"], "docs:write");
    assert_eq!(doc["type"], "urn:credstore:problem:insufficient-permissions");
    assert_eq!(call(Method::POST, "/v1/docs", &writer, &[]).await.status, 200);

    // The endpoint allowlist sees the path as called, under `nest` too.
    assert_eq!(
        call(Method::GET, "/api/v1/hello", &endpoint_bound, &[]).await.status,
        200
    );
    let doc = assert_problem(
        &call(Method::GET, "/v1/hello", &endpoint_bound, &[]).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(doc["restriction"], "endpoint");
    let doc = assert_problem(
        &call(Method::POST, "/api/v1/render", &endpoint_bound, &[]).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(doc["restriction"], "endpoint");

    // Referer, else Origin.
    let web = [("referer", "https://app.example.com/page")];
    assert_eq!(call(Method::GET, "/v1/hello", &referrer_bound, &web).await.status, 200);
    let origin = [("origin", "https://app.example.com")];
    assert_eq!(
        call(Method::GET, "/v1/hello", &referrer_bound, &origin).await.status,
        200
    );
    let evil = [("referer", "https://evil.test/")];
    let doc = assert_problem(
        &call(Method::GET, "/v1/hello", &referrer_bound, &evil).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(doc["restriction"], "referrer");
    let doc = assert_problem(
        &call(Method::GET, "/v1/hello", &referrer_bound, &[]).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(doc["restriction"], "referrer");

    // The connection's address is not in the office range.
    let doc = assert_problem(&call(Method::GET, "/v1/hello", &ip_bound, &[]).await, 403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "ip");
    assert_eq!(doc["type"], "urn:credstore:problem:forbidden");

    // A layer pinned to a project refuses keys of others.
    let pinned = serve(api(&fx.layer().project("acme"))).await;
    let other = send(
        pinned,
        request(Method::GET, "/v1/hello", &[("authorization", &bearer(&member))], None),
    )
    .await;
    assert_eq!(assert_problem(&other, 403, "FORBIDDEN")["restriction"], "project");
    let own = send(
        pinned,
        request(Method::GET, "/v1/hello", &[("authorization", &bearer(&acme))], None),
    )
    .await;
    assert_eq!(own.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let fx = Fixture::new();
    let far = "203.0.113.7";
    let (far_key, _) = fx.key(NewKey::new("far").allow_ips(IpAllowlist::new([far]).expect("ips")));
    let (local_key, _) = fx.key(NewKey::new("local").allow_ips(IpAllowlist::new(["127.0.0.1"]).expect("ips")));
    // 127.0.0.2 is the proxy; 127.0.0.1 is a client talking to us directly.
    let layer = fx
        .layer()
        .trusted_proxies(TrustedProxies::new(["127.0.0.2"]).expect("proxies"));
    let addr = serve(api(&layer)).await;
    let hello = |key: &str, xff: Option<&str>| {
        let auth = bearer(key);
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(xff) = xff {
            headers.push(("x-forwarded-for", xff));
        }
        request(Method::GET, "/v1/hello", &headers, None)
    };

    // A direct client cannot claim another address.
    let spoofed = Conn::from("127.0.0.1", addr)
        .await
        .send(hello(&far_key, Some(far)))
        .await;
    assert_eq!(assert_problem(&spoofed, 403, "FORBIDDEN")["restriction"], "ip");
    let direct = Conn::from("127.0.0.1", addr)
        .await
        .send(hello(&local_key, Some(far)))
        .await;
    assert_eq!(direct.status, 200, "the peer's own address counts: {direct:?}");

    // Through the proxy, the address it appended counts, and a forged one left of it does not.
    let proxied = Conn::from("127.0.0.2", addr)
        .await
        .send(hello(&far_key, Some(far)))
        .await;
    assert_eq!(proxied.status, 200, "{proxied:?}");
    let forged = Conn::from("127.0.0.2", addr)
        .await
        .send(hello(&far_key, Some(&format!("{far}, 198.51.100.1"))))
        .await;
    assert_eq!(assert_problem(&forged, 403, "FORBIDDEN")["restriction"], "ip");
    // The proxy's own request (no header) comes from the proxy.
    let bare = Conn::from("127.0.0.2", addr).await.send(hello(&far_key, None)).await;
    assert_eq!(assert_problem(&bare, 403, "FORBIDDEN")["restriction"], "ip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_pass_exactly_the_rate_limit() {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    const LIMIT: usize = 100;
    let fx = Fixture::new();
    let (key, _) = fx.key(NewKey::new("busy").rate_limit(RateLimit::parse(&format!("{LIMIT}/1h")).expect("limit")));
    let addr = serve(api(&fx.layer())).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let auth = bearer(&key);
            tokio::spawn(async move {
                let mut conn = Conn::to(addr).await;
                let mut statuses = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    let reply = conn
                        .send(request(Method::GET, "/v1/hello", &[("authorization", &auth)], None))
                        .await;
                    if reply.status == 429 {
                        assert!(number(&reply, "retry-after") > 0);
                        assert_eq!(number(&reply, "x-ratelimit-remaining"), 0);
                    }
                    statuses.push(reply.status);
                }
                statuses
            })
        })
        .collect();
    let mut passed = 0;
    let mut limited = 0;
    for task in tasks {
        for status in task.await.expect("task") {
            match status {
                200 => passed += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!(passed, LIMIT);
    assert_eq!(limited, TASKS * EACH - LIMIT);
}

// ---------------------------------------------------------------------------------------
// The example

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_routes_behave_as_documented() {
    let fx = Fixture::new();
    let (member, _) = fx.key(
        NewKey::new("demo")
            .role(RoleName::parse("member").expect("role"))
            .budget(Budget::new(25, Period::Total).expect("budget")),
    );
    let (writer, writer_id) =
        fx.key(NewKey::new("demo writer").permissions(PermissionSet::parse([example::DOCS_PERMISSION]).expect("perm")));
    let addr = serve(example::app(Some(&fx.layer())).expect("app")).await;
    let call = |method: Method, path: &str, key: Option<&str>| {
        let auth = key.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let req = request(method, path, &headers, None);
        async move { send(addr, req).await }
    };

    let health = call(Method::GET, "/health", None).await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok\n"[..]));
    assert_problem(&call(Method::GET, "/v1/hello", None).await, 401, "UNAUTHORIZED");
    assert_problem(&call(Method::GET, "/v1/ping", None).await, 401, "UNAUTHORIZED");
    let ping = call(Method::GET, "/v1/ping", Some(&member)).await;
    assert_eq!((ping.status, &ping.body[..]), (200, &b"pong\n"[..]));
    let hello = call(Method::GET, "/v1/hello", Some(&member)).await;
    assert_eq!((hello.status, &hello.body[..]), (200, &b"hello, demo\n"[..]));

    assert_problem(
        &call(Method::POST, "/v1/docs", Some(&member)).await,
        403,
        "INSUFFICIENT_PERMISSIONS",
    );
    let written = call(Method::POST, "/v1/docs", Some(&writer)).await;
    assert_eq!(written.status, 200);
    assert_eq!(written.json(), json!({ "written": true, "by": writer_id.as_str() }));

    // 25 units: ping and hello took 1 each; each render costs RENDER_COST.
    let cost = example::RENDER_COST;
    let first = call(Method::POST, "/v1/render", Some(&member)).await;
    assert_eq!(first.json()["budget_remaining"], 25 - 2 - cost);
    let second = call(Method::POST, "/v1/render", Some(&member)).await;
    assert_eq!(second.json()["budget_remaining"], 25 - 2 - 2 * cost);
    assert_problem(
        &call(Method::POST, "/v1/render", Some(&member)).await,
        402,
        "BUDGET_EXHAUSTED",
    );

    // Without the layer the same routes are open.
    let open = serve(example::app(None).expect("app")).await;
    let reply = send(open, request(Method::POST, "/v1/docs", &[], None)).await;
    assert_eq!(reply.json(), json!({ "written": true, "by": null }));
    assert_eq!(
        send(open, request(Method::GET, "/v1/hello", &[], None)).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_fixed_fields_baseline_sets_the_fields_the_layer_sets() {
    // `--no-auth --fixed-rate-fields` stands for "the fields without credstore" in the
    // load figures: it must set the same fields the layer sets for a key with a limit.
    let fx = Fixture::new();
    let (key, _) = fx.key(NewKey::new("limited").rate_limit(RateLimit::parse("1000/1s:bench").expect("limit")));
    let addr = serve(example::app(Some(&fx.layer())).expect("app")).await;
    let layered = send(
        addr,
        request(Method::GET, "/v1/ping", &[("authorization", &bearer(&key))], None),
    )
    .await;
    assert_eq!(layered.status, 200);
    let names = |headers: &HeaderMap| -> Vec<String> {
        let mut names: Vec<String> = headers
            .keys()
            .map(|name| name.as_str().to_string())
            .filter(|name| name.contains("ratelimit"))
            .collect();
        names.sort();
        names
    };
    let fixed = example::fixed_rate_fields(axum::response::Response::new(axum::body::Body::empty()));
    assert_eq!(names(fixed.headers()), names(&layered.headers));
    assert_eq!(names(fixed.headers()).len(), 5);
}

// ---------------------------------------------------------------------------------------
// The sidecar: `credstore serve`

/// Runs `credstore --data DATA ARGS`, returning stdout; panics unless it exits 0.
fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("CREDSTORE_PEPPER")
        .env_remove("CREDSTORE_DATA")
        .output()
        .expect("run credstore");
    assert!(out.status.success(), "credstore {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `credstore serve` on a free loopback port, stopped (SIGTERM) when dropped.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

/// `credstore serve`'s limits, set from the environment when no flag sets them.
const SERVE_ENV: [&str; 4] = [
    "CREDSTORE_HEADER_TIMEOUT",
    "CREDSTORE_IDLE_TIMEOUT",
    "CREDSTORE_REQUEST_TIMEOUT",
    "CREDSTORE_MAX_CONNECTIONS",
];

impl Sidecar {
    fn start(data: &Path) -> Sidecar {
        Sidecar::start_with(data, &[])
    }

    /// With more arguments to `serve`.
    fn start_with(data: &Path, args: &[&str]) -> Sidecar {
        Sidecar::spawn(Command::new(env!("CARGO_BIN_EXE_credstore")), data, args)
    }

    /// `program`, which runs the binary with the arguments it is given.
    fn spawn(mut program: Command, data: &Path, args: &[&str]) -> Sidecar {
        for name in SERVE_ENV {
            program.env_remove(name);
        }
        let mut child = program
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("CREDSTORE_PEPPER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn credstore serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("Listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Sidecar { child, addr }
    }

    /// SIGTERM, then the exit status and stderr (bounded wait).
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "credstore serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // Only when a test failed before `stop`: do not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envelope_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    let doc = reply.json();
    assert_eq!(doc["success"], false, "{doc}");
    assert_eq!(doc["error"]["code"], code, "{doc}");
    assert!(doc["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{doc}");
}

fn envelope_data(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{reply:?}");
    let doc = reply.json();
    assert_eq!(doc["success"], true, "{doc}");
    doc["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_verifies_manages_keys_for_admins_and_flushes_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = cli(&data, &["init"]);
    assert!(init.contains("Initialised"), "{init}");
    let admin = init
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("csa_"))
        .unwrap_or_else(|| panic!("init printed no admin key: {init}"))
        .to_string();
    let listed = cli(&data, &["list", "--json"]);
    assert!(listed.contains("bootstrap admin"), "{listed}");
    assert!(!listed.contains(&admin), "list shows the key");

    let sidecar = Sidecar::start(&data);
    let addr = sidecar.addr;
    let admin_auth = bearer(&admin);
    let as_admin = [("authorization", admin_auth.as_str())];

    // The management API: no key, a wrong key, a key that is not an admin's.
    envelope_error(
        &send(addr, request(Method::GET, "/v1/api-keys", &[], None)).await,
        401,
        "UNAUTHORIZED",
    );
    let wrong = [("authorization", "Bearer sk_live_nope")];
    envelope_error(
        &send(addr, request(Method::GET, "/v1/api-keys", &wrong, None)).await,
        401,
        "UNAUTHORIZED",
    );

    let body = json!({
        "name": "svc", "project": "acme", "rate_limits": ["10/1m:minute"],
        "budget": 100, "budget_period": "total", "metadata": { "team": "infra" },
    });
    let created = send(addr, request(Method::POST, "/v1/api-keys", &as_admin, Some(body))).await;
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let created = envelope_data(&created, 201);
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(created["project"], "acme");
    assert_eq!(created["metadata"]["team"], "infra");

    let not_admin = [("x-api-key", key.as_str())];
    envelope_error(
        &send(addr, request(Method::GET, "/v1/api-keys", &not_admin, None)).await,
        403,
        "ADMIN_REQUIRED",
    );
    let sneaky = json!({ "name": "escalate", "role": "admin" });
    let refused = send(addr, request(Method::POST, "/v1/api-keys", &not_admin, Some(sneaky))).await;
    envelope_error(&refused, 403, "ADMIN_REQUIRED");
    envelope_error(
        &send(addr, request(Method::GET, "/v1/audit", &not_admin, None)).await,
        403,
        "ADMIN_REQUIRED",
    );

    // List, show.
    let list = envelope_data(
        &send(addr, request(Method::GET, "/v1/api-keys", &as_admin, None)).await,
        200,
    );
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["bootstrap admin", "svc"]);
    assert!(list.as_array().expect("array").iter().all(|k| k.get("key").is_none()));
    let acme = envelope_data(
        &send(addr, request(Method::GET, "/v1/api-keys?project=acme", &as_admin, None)).await,
        200,
    );
    assert_eq!(acme.as_array().map(Vec::len), Some(1));
    envelope_error(
        &send(
            addr,
            request(Method::GET, "/v1/api-keys?status=sleepy", &as_admin, None),
        )
        .await,
        400,
        "BAD_REQUEST",
    );
    let shown = send(
        addr,
        request(Method::GET, &format!("/v1/api-keys/{id}"), &as_admin, None),
    )
    .await;
    let shown = envelope_data(&shown, 200);
    assert_eq!(
        (shown["name"].as_str(), shown["status"].as_str()),
        (Some("svc"), Some("active"))
    );
    let nobody = format!("/v1/api-keys/key_{}", "0".repeat(22));
    envelope_error(
        &send(addr, request(Method::GET, &nobody, &as_admin, None)).await,
        404,
        "NOT_FOUND",
    );
    envelope_error(
        &send(addr, request(Method::GET, "/v1/api-keys/nonsense", &as_admin, None)).await,
        400,
        "INVALID_INPUT",
    );
    let bad = json!({ "name": "" });
    envelope_error(
        &send(addr, request(Method::POST, "/v1/api-keys", &as_admin, Some(bad))).await,
        400,
        "INVALID_INPUT",
    );

    // Verify: open to callers, the decision as `verify --json` gives it.
    let verify = |body: Value| send(addr, request(Method::POST, "/v1/keys.verify", &[], Some(body)));
    let valid = envelope_data(
        &verify(json!({ "key": key, "cost": 3, "endpoint": "GET /v1/x" })).await,
        200,
    );
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["status"], 200);
    assert_eq!(valid["key_id"], id.as_str());
    assert_eq!(valid["budget"]["spent"], 3);
    assert_eq!(valid["ratelimits"][0]["remaining"], 9);
    let wrong_project = envelope_data(&verify(json!({ "key": key, "project": "other" })).await, 200);
    assert_eq!(
        (wrong_project["code"].as_str(), wrong_project["status"].as_u64()),
        (Some("FORBIDDEN"), Some(403))
    );
    assert_eq!(wrong_project["forbidden"], "project");
    let needs = envelope_data(
        &verify(json!({ "key": key, "require": "docs:write", "cost": 0 })).await,
        200,
    );
    assert_eq!(needs["code"], "INSUFFICIENT_PERMISSIONS");
    let malformed = envelope_data(&verify(json!({ "key": "sk_live_nope" })).await, 200);
    assert_eq!(
        (malformed["valid"].as_bool(), malformed["status"].as_u64()),
        (Some(false), Some(401))
    );
    envelope_error(
        &verify(json!({ "key": key, "ip": "not an ip" })).await,
        400,
        "BAD_REQUEST",
    );
    envelope_error(
        &verify(json!({ "key": key, "require": "((" })).await,
        400,
        "INVALID_INPUT",
    );
    envelope_error(&verify(json!({ "kee": key })).await, 400, "BAD_REQUEST");

    // Rotate: a new key with the same settings; the old one dies at once.
    let rotated = send(
        addr,
        request(Method::POST, &format!("/v1/api-keys/{id}/rotate"), &as_admin, None),
    )
    .await;
    let rotated = envelope_data(&rotated, 200);
    let new_key = rotated["key"].as_str().expect("key").to_string();
    let new_id = rotated["id"].as_str().expect("id").to_string();
    assert_eq!(rotated["replaces"], id.as_str());
    assert_eq!(
        envelope_data(&verify(json!({ "key": key, "cost": 0 })).await, 200)["code"],
        "REVOKED"
    );
    let fresh = envelope_data(&verify(json!({ "key": new_key, "cost": 0 })).await, 200);
    assert_eq!(
        (fresh["code"].as_str(), fresh["project"].as_str()),
        (Some("VALID"), Some("acme"))
    );

    // Revoke, once.
    let path = format!("/v1/api-keys/{new_id}?reason=done");
    let revoked = envelope_data(&send(addr, request(Method::DELETE, &path, &as_admin, None)).await, 200);
    assert_eq!(
        (revoked["status"].as_str(), revoked["revoke_reason"].as_str()),
        (Some("revoked"), Some("done"))
    );
    envelope_error(
        &send(addr, request(Method::DELETE, &path, &as_admin, None)).await,
        409,
        "CONFLICT",
    );

    // The audit log, filtered.
    let audit = send(
        addr,
        request(Method::GET, "/v1/audit?kind=key.revoked", &as_admin, None),
    )
    .await;
    let events = envelope_data(&audit, 200);
    let events = events.as_array().expect("array");
    assert!(
        events
            .iter()
            .any(|e| e["details"]["key_id"] == new_id.as_str() && e["details"]["reason"] == "done"),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["kind"] == "key.revoked"));
    envelope_error(
        &send(addr, request(Method::GET, "/v1/nothing", &as_admin, None)).await,
        404,
        "NOT_FOUND",
    );

    // A key whose spend is charged through the sidecar, then a graceful stop.
    let meter = json!({ "name": "meter", "budget": 1000, "budget_period": "total" });
    let meter = envelope_data(
        &send(addr, request(Method::POST, "/v1/api-keys", &as_admin, Some(meter))).await,
        201,
    );
    let meter_key = meter["key"].as_str().expect("key").to_string();
    let meter_id = KeyId::parse(meter["id"].as_str().expect("id")).expect("id");
    for _ in 0..3 {
        assert_eq!(
            envelope_data(&verify(json!({ "key": meter_key, "cost": 3 })).await, 200)["valid"],
            true
        );
    }
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("store closed"), "{stderr}");

    // A clean close keeps spend exact (a crash would restore it at the persisted mark, ahead).
    let store = Store::open(&data, Config::new()).expect("reopen");
    let decision = store
        .verify_with(&VerifyRequest::new(&meter_key).cost(0))
        .expect("verify");
    assert_eq!(decision.budget.as_ref().map(|b| b.spent), Some(9), "{decision:?}");
    assert!(store.get(&meter_id).expect("get").last_used_at.is_some());
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// The sidecar's connections: slow and idle clients never keep others out

/// A fresh store for a sidecar, in a temp dir.
fn sidecar_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    cli(&data, &["init"]);
    (dir, data)
}

/// A verify of a malformed key (no state changes), as a client that means it sends it.
fn verify_malformed() -> Request<Full<Bytes>> {
    let body = json!({ "key": "sk_live_nope", "cost": 0 });
    request(Method::POST, "/v1/keys.verify", &[], Some(body))
}

/// The same request, as bytes on the wire.
fn verify_malformed_bytes() -> Vec<u8> {
    let body = json!({ "key": "sk_live_nope", "cost": 0 }).to_string();
    format!(
        "POST /v1/keys.verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The head of a request, cut short.
const HALF_A_HEAD: &[u8] = b"POST /v1/keys.verify HTTP/1.1\r\nHost: localhost\r\nContent-Ty";

/// How long a test waits for what a timeout of a second or two, or an eviction, must bring.
const PATIENCE: Duration = Duration::from_secs(10);

/// A verify on a fresh connection, answered within [`PATIENCE`].
async fn verify_answered(addr: SocketAddr) {
    let reply = tokio::time::timeout(PATIENCE, send(addr, verify_malformed()))
        .await
        .unwrap_or_else(|_| panic!("a request was kept waiting for {PATIENCE:?}"));
    assert_eq!(envelope_data(&reply, 200)["code"], "MALFORMED");
}

/// Whether the server closes `stream` within `limit`; whatever it sends first is dropped.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let until_closed = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(limit, until_closed).await.is_ok()
}

/// Reads one answer with a Content-Length off the wire: its status and JSON body.
async fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(bytes[..end].to_vec()).expect("head");
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let line = line.to_ascii_lowercase();
                        line.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().expect("length"))
                    })
                    .unwrap_or_else(|| panic!("no content-length: {head}"));
                let body = end + 4..end + 4 + length;
                if bytes.len() >= body.end {
                    let status = head[9..12].parse().expect("status");
                    return (status, serde_json::from_slice(&bytes[body]).expect("JSON body"));
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed mid-answer: {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("no answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_cut_off_while_others_are_served() {
    let (_dir, data) = sidecar_store();
    let sidecar = Sidecar::start_with(&data, &["--header-timeout", "1s"]);
    let addr = sidecar.addr;

    // One sends half a head and stops; one sends a head a byte at a time, never ending it.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled.write_all(HALF_A_HEAD).await.expect("write");
    let (mut dribbled, mut dribbling) = TcpStream::connect(addr).await.expect("connect").into_split();
    let dribbler = tokio::spawn(async move {
        let start = b"GET /v1/nothing HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        if dribbling.write_all(start).await.is_err() {
            return;
        }
        // Bounded: 20 s of one byte every 100 ms, unless the sidecar closes first.
        for _ in 0..200 {
            if dribbling.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Meanwhile, others are served.
    for _ in 0..3 {
        verify_answered(addr).await;
    }
    assert!(
        closed_within(&mut stalled, PATIENCE).await,
        "half a head held its connection"
    );
    assert!(
        closed_within(&mut dribbled, PATIENCE).await,
        "a head sent a byte at a time held its connection"
    );
    dribbler.abort();
    verify_answered(addr).await;
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (_dir, data) = sidecar_store();
    // A header timeout far longer than the test: only the idle timeout can close it.
    let sidecar = Sidecar::start_with(&data, &["--idle-timeout", "2s", "--header-timeout", "60s"]);
    let addr = sidecar.addr;
    let verify = verify_malformed_bytes();

    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(&verify).await.expect("write");
    assert_eq!(read_answer(&mut conn).await.0, 200);
    // Kept alive: a head begun after the answer has the header timeout, not the idle one,
    // even when it pauses longer than the idle timeout.
    let (first, rest) = verify.split_at(20);
    conn.write_all(first).await.expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    conn.write_all(rest).await.expect("write");
    assert_eq!(read_answer(&mut conn).await.0, 200);
    // Then nothing: the idle timeout closes it.
    assert!(
        closed_within(&mut conn, PATIENCE).await,
        "an idle connection stayed open"
    );
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_never_keep_a_real_request_out() {
    const LIMIT: usize = 8;
    let (_dir, data) = sidecar_store();
    // Timeouts far longer than the test: only the connection limit can make room.
    let sidecar = Sidecar::start_with(
        &data,
        &[
            "--max-connections",
            &LIMIT.to_string(),
            "--header-timeout",
            "60s",
            "--idle-timeout",
            "60s",
        ],
    );
    let addr = sidecar.addr;

    // Three times over, the limit's worth of each: connected and silent, half a head sent,
    // and kept alive after an answer. After each, a real request is answered.
    let mut raw = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..3 {
        for _ in 0..LIMIT {
            raw.push(TcpStream::connect(addr).await.expect("connect"));
            let mut half = TcpStream::connect(addr).await.expect("connect");
            half.write_all(HALF_A_HEAD).await.expect("write");
            raw.push(half);
            let mut conn = Conn::to(addr).await;
            let reply = tokio::time::timeout(PATIENCE, conn.send(verify_malformed()))
                .await
                .expect("a request was kept waiting");
            assert_eq!(envelope_data(&reply, 200)["code"], "MALFORMED");
            kept.push(conn);
        }
        verify_answered(addr).await;
    }

    // And the limit held: all but the limit's worth of them have been closed.
    let total = raw.len() + kept.len();
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watchers = tokio::task::JoinSet::new();
    for mut stream in raw {
        let closed = Arc::clone(&closed);
        watchers.spawn(async move {
            if closed_within(&mut stream, 2 * PATIENCE).await {
                closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    for conn in kept {
        let closed = Arc::clone(&closed);
        watchers.spawn(async move {
            if conn.closed_by_server_within(2 * PATIENCE).await {
                closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let count = closed.load(std::sync::atomic::Ordering::Relaxed);
        if count >= total - LIMIT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {total} closed: more than {LIMIT} open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watchers.abort_all();
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_get_408_and_give_their_slots_to_the_next_client() {
    const LIMIT: usize = 4;
    let (_dir, data) = sidecar_store();
    let sidecar = Sidecar::start_with(
        &data,
        &["--max-connections", &LIMIT.to_string(), "--request-timeout", "1s"],
    );
    let addr = sidecar.addr;

    // Each slot holds a request whose body is slow to come: in flight, so none is evicted.
    let head = b"POST /v1/keys.verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\nExpect: 100-continue\r\n\r\n";
    let mut slow = Vec::new();
    for _ in 0..LIMIT {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head).await.expect("write");
        // 100 Continue: the sidecar is reading the body, the request is in flight.
        let mut interim = [0u8; 25];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut interim))
            .await
            .expect("no 100 Continue")
            .expect("read");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(br#"{"key": "#).await.expect("write");
        slow.push(stream);
    }

    // A newcomer waits for a slot, no longer than the request timeout takes to free one.
    verify_answered(addr).await;
    for mut stream in slow {
        let (status, body) = read_answer(&mut stream).await;
        assert_eq!(status, 408, "{body}");
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT", "{body}");
        assert!(
            closed_within(&mut stream, PATIENCE).await,
            "the connection stayed open after a 408"
        );
    }
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_the_sidecar_has_descriptors_do_not_stop_it() {
    // The issue's case, scaled down: 1,100 idle connections against `ulimit -n 1024` filled
    // the descriptor table; here 300 against 128, with a limit under it.
    let (_dir, data) = sidecar_store();
    let mut limited = Command::new("sh");
    limited.args([
        "-c",
        r#"ulimit -n 128 && exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_credstore"),
    ]);
    let sidecar = Sidecar::spawn(limited, &data, &["--max-connections", "64"]);
    let addr = sidecar.addr;
    let mut idle = Vec::new();
    for round in 0..3 {
        for _ in 0..100 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        verify_answered(addr).await;
        assert_eq!(idle.len(), 100 * (round + 1));
    }
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(!stderr.contains("cannot accept"), "{stderr}");
}
