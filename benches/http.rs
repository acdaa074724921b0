//! What `credstore::http::ApiKeyLayer` adds to a request, in process (no network).
//!
//! A router with one route (`GET /v1/ping`, a handler that ignores the decision) is called
//! through `tower::ServiceExt::oneshot` on a current-thread tokio runtime, with the request
//! as a server would hand it over (`Authorization: Bearer`, `User-Agent`, `Accept`, and the
//! peer's address as `ConnectInfo`). Each iteration builds the request, calls the router,
//! and writes the response head into a buffer the way hyper's HTTP/1 encoder does (name,
//! `": "`, value, CRLF per field), so fewer or cheaper fields show.
//!
//! - `http/no_layer`: the same router without the layer (the baseline);
//! - `http/layer/plain`: a key without rate limits or budget;
//! - `http/layer/limited`: a key with one rate limit and a monthly budget (neither near
//!   running out), so every answer carries the five rate-limit fields;
//! - `http/layer/limited_x_ratelimit`: the same with `RateLimitFields::XRateLimit`, three
//!   fields instead of five;
//! - `http/verify/plain`, `http/verify/limited`: `Store::verify_with` alone with what the
//!   layer passes it, for the same keys: the layer's own cost is
//!   `layer - no_layer - verify`.
//!
//! - `http/pass_layer`: the router with a do-nothing route layer instead (tower's
//!   `Identity`): what axum charges any route layer (cloning the boxed route per request,
//!   one more future), i.e. the part of `layer - no_layer` credstore cannot cut.
//! - `http/fields_layer`: a route layer (tower's `MapResponseLayer` over the example
//!   server's `fixed_rate_fields`, as its `--fixed-rate-fields` does) setting five
//!   rate-limit fields of fixed values (as many bytes as the limited key's) on every
//!   response: what sending the fields the
//!   issue asks for costs any layer, with nothing formatted; `fields_layer - pass_layer`
//!   is a lower bound of the part of `layer/limited - layer/plain` that comes with the
//!   fields themselves (static values need no allocation or reference count).
//!
//! - `http/governor/authorization`, `http/governor/peer_ip`: the router behind
//!   tower_governor's `GovernorLayer` instead (as the example server's `--governor`: a
//!   quota nothing reaches, its two `x-ratelimit-*` fields), counting requests by the
//!   `Authorization` header or by the peer's address: the peer `layer/limited` is compared
//!   with (rate limits and fields, but no key checked and no budget).
//!
//! The store logs no uses (`UseLog::Off`): the use log is the store's cost, not the layer's.
//!
//! On a shared, noisy machine criterion's estimates wander; with `HTTP_PROBE=ROUNDS` set the
//! bench instead runs every variant in turn, ROUNDS times 20,000 calls each, and prints the
//! fastest batch per variant (interference only slows a batch down). `HTTP_PROBE_ONLY=NAME`
//! runs just that variant, e.g. under `valgrind --tool=callgrind` to count instructions,
//! which noise does not move.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::routing::get;
use credstore::http::{ApiKeyLayer, RateLimitFields};
use credstore::limits::MAX_BUDGET;
use credstore::{Budget, Code, Config, NewKey, Pepper, Period, RateLimit, Store, UseLog, VerifyRequest};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;
use tower::layer::util::Identity;
use tower::util::MapResponseLayer;
use tower_governor::GovernorLayer;
use tower_governor::key_extractor::PeerIpKeyExtractor;

#[path = "../examples/axum_server.rs"]
#[allow(dead_code)]
mod example;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);

struct Fixture {
    store: Arc<Store>,
    plain: String,
    limited: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let config = Config::new().pepper(Pepper::from_bytes([7; 32])).use_log(UseLog::Off);
        Store::init(&path, config.clone()).unwrap().close().unwrap();
        let store = Store::open(&path, config).unwrap();
        let plain = store.create(NewKey::new("plain")).unwrap().key.expose().to_string();
        let limited = NewKey::new("bench")
            .rate_limit(RateLimit::new("bench", 1_000_000_000, 1_000).unwrap())
            .budget(Budget::new(MAX_BUDGET, Period::Monthly { anchor_day: 1 }).unwrap());
        let limited = store.create(limited).unwrap().key.expose().to_string();
        Fixture {
            store: Arc::new(store),
            plain,
            limited,
            _dir: dir,
        }
    }
}

fn router(layer: Option<ApiKeyLayer>) -> Router {
    let route = get(|| async { "pong\n" });
    let route = match layer {
        Some(layer) => route.layer(layer),
        None => route,
    };
    Router::new().route("/v1/ping", route)
}

fn request(auth: &str) -> Request<Body> {
    let mut req = Request::get("/v1/ping")
        .header("host", "127.0.0.1:18083")
        .header("authorization", auth)
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(PEER));
    req
}

/// The response head as hyper's HTTP/1 encoder writes it (status line left out).
fn write_head(response: &Response<Body>, out: &mut Vec<u8>) {
    out.clear();
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn call(rt: &tokio::runtime::Runtime, router: &Router, auth: &str, head: &mut Vec<u8>) -> u16 {
    let response = rt.block_on(router.clone().oneshot(request(auth))).unwrap();
    write_head(&response, head);
    response.status().as_u16()
}

fn bench(c: &mut Criterion) {
    let fx = Fixture::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = router(None);
    let guarded = router(Some(ApiKeyLayer::new(Arc::clone(&fx.store))));
    let guarded_x = router(Some(
        ApiKeyLayer::new(Arc::clone(&fx.store)).rate_limit_fields(RateLimitFields::XRateLimit),
    ));
    let passed = Router::new().route("/v1/ping", get(|| async { "pong\n" }).layer(Identity::new()));
    let fielded = Router::new().route(
        "/v1/ping",
        get(|| async { "pong\n" }).layer(MapResponseLayer::new(example::fixed_rate_fields)),
    );
    let governed_key = Router::new().route(
        "/v1/ping",
        get(|| async { "pong\n" }).layer(GovernorLayer::new(
            example::governor_config(example::AuthorizationKey).unwrap(),
        )),
    );
    let governed_ip = Router::new().route(
        "/v1/ping",
        get(|| async { "pong\n" }).layer(GovernorLayer::new(
            example::governor_config(PeerIpKeyExtractor).unwrap(),
        )),
    );
    let plain = format!("Bearer {}", fx.plain);
    let limited = format!("Bearer {}", fx.limited);
    let mut head = Vec::with_capacity(512);

    // Check what is measured: 200s, and the fields only for the limited key.
    assert_eq!(call(&rt, &bare, &plain, &mut head), 200);
    assert_eq!(call(&rt, &guarded, &plain, &mut head), 200);
    assert!(!head.windows(9).any(|w| w == b"ratelimit"), "no fields for a plain key");
    assert_eq!(call(&rt, &guarded, &limited, &mut head), 200);
    assert_eq!(head.windows(9).filter(|w| *w == b"ratelimit").count(), 5, "five fields");
    assert_eq!(call(&rt, &guarded_x, &limited, &mut head), 200);
    assert_eq!(
        head.windows(11).filter(|w| *w == b"x-ratelimit").count(),
        3,
        "three fields"
    );
    assert_eq!(head.windows(9).filter(|w| *w == b"ratelimit").count(), 3, "only those");
    assert_eq!(call(&rt, &passed, &plain, &mut head), 200);
    assert_eq!(call(&rt, &fielded, &plain, &mut head), 200);
    assert_eq!(head.windows(9).filter(|w| *w == b"ratelimit").count(), 5, "five fields");
    for governed in [&governed_key, &governed_ip] {
        assert_eq!(call(&rt, governed, &limited, &mut head), 200);
        assert_eq!(
            head.windows(11).filter(|w| *w == b"x-ratelimit").count(),
            2,
            "governor's two fields"
        );
    }

    if let Some(rounds) = std::env::var("HTTP_PROBE").ok().and_then(|r| r.parse::<usize>().ok()) {
        probe(
            rounds,
            &fx,
            &rt,
            [
                &bare,
                &passed,
                &fielded,
                &guarded,
                &guarded_x,
                &governed_key,
                &governed_ip,
            ],
            [&plain, &limited],
        );
        return;
    }

    let mut g = c.benchmark_group("http");
    g.bench_function("no_layer", |b| {
        b.iter(|| black_box(call(&rt, &bare, &plain, &mut head)))
    });
    g.bench_function("pass_layer", |b| {
        b.iter(|| black_box(call(&rt, &passed, &plain, &mut head)))
    });
    g.bench_function("fields_layer", |b| {
        b.iter(|| black_box(call(&rt, &fielded, &plain, &mut head)))
    });
    g.bench_function("layer/plain", |b| {
        b.iter(|| black_box(call(&rt, &guarded, &plain, &mut head)))
    });
    g.bench_function("layer/limited", |b| {
        b.iter(|| black_box(call(&rt, &guarded, &limited, &mut head)))
    });
    g.bench_function("layer/limited_x_ratelimit", |b| {
        b.iter(|| black_box(call(&rt, &guarded_x, &limited, &mut head)))
    });
    g.bench_function("governor/authorization", |b| {
        b.iter(|| black_box(call(&rt, &governed_key, &limited, &mut head)))
    });
    g.bench_function("governor/peer_ip", |b| {
        b.iter(|| black_box(call(&rt, &governed_ip, &limited, &mut head)))
    });
    for (name, key) in [("verify/plain", &fx.plain), ("verify/limited", &fx.limited)] {
        let req = VerifyRequest::new(key).endpoint("GET", "/v1/ping").ip(PEER.ip());
        assert_eq!(fx.store.verify_with(&req).unwrap().code, Code::Valid);
        g.bench_function(name, |b| {
            b.iter(|| black_box(fx.store.verify_with(black_box(&req)).unwrap()))
        });
    }
    g.finish();
}

/// Every variant in turn, `rounds` times; prints the fastest batch of each and what the
/// layer adds over the router without it.
fn probe(rounds: usize, fx: &Fixture, rt: &tokio::runtime::Runtime, routers: [&Router; 7], auths: [&String; 2]) {
    const BATCH: u32 = 20_000;
    let [bare, passed, fielded, guarded, guarded_x, governed_key, governed_ip] = routers;
    let [plain, limited] = auths;
    let plain_req = VerifyRequest::new(&fx.plain).endpoint("GET", "/v1/ping").ip(PEER.ip());
    let limited_req = VerifyRequest::new(&fx.limited)
        .endpoint("GET", "/v1/ping")
        .ip(PEER.ip());
    let mut head = Vec::with_capacity(512);
    let names = [
        "no_layer",
        "pass_layer",
        "fields_layer",
        "layer/plain",
        "layer/limited",
        "layer/limited_x_ratelimit",
        "verify/plain",
        "verify/limited",
        "governor/authorization",
        "governor/peer_ip",
    ];
    let only = std::env::var("HTTP_PROBE_ONLY").ok();
    let mut best = [f64::MAX; 10];
    for _ in 0..rounds {
        for (i, slot) in best.iter_mut().enumerate() {
            if only.as_deref().is_some_and(|only| only != names[i]) {
                continue;
            }
            let start = Instant::now();
            for _ in 0..BATCH {
                match i {
                    0 => black_box(call(rt, bare, plain, &mut head)),
                    1 => black_box(call(rt, passed, plain, &mut head)),
                    2 => black_box(call(rt, fielded, plain, &mut head)),
                    3 => black_box(call(rt, guarded, plain, &mut head)),
                    4 => black_box(call(rt, guarded, limited, &mut head)),
                    5 => black_box(call(rt, guarded_x, limited, &mut head)),
                    6 => black_box(fx.store.verify_with(black_box(&plain_req)).unwrap().http_status()),
                    7 => black_box(fx.store.verify_with(black_box(&limited_req)).unwrap().http_status()),
                    8 => black_box(call(rt, governed_key, limited, &mut head)),
                    _ => black_box(call(rt, governed_ip, limited, &mut head)),
                };
            }
            let ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH);
            *slot = slot.min(ns);
        }
    }
    for (name, ns) in names.iter().zip(best) {
        println!("{name:<26} {ns:>8.1} ns");
    }
    let [
        bare,
        pass,
        fields,
        plain,
        limited,
        limited_x,
        v_plain,
        v_limited,
        gov_key,
        gov_ip,
    ] = best;
    println!("axum's cost of any route layer: {:.1} ns", pass - bare);
    println!("setting five fixed rate-limit fields: {:.1} ns", fields - pass);
    println!(
        "layer adds: plain {:.1} ns ({:.1} without verify), limited {:.1} ns ({:.1} without verify)",
        plain - bare,
        plain - bare - v_plain,
        limited - bare,
        limited - bare - v_limited
    );
    println!("limited, X-RateLimit-* only: {:.1} ns", limited_x - bare);
    println!(
        "tower_governor adds: by Authorization {:.1} ns, by peer address {:.1} ns",
        gov_key - bare,
        gov_ip - bare
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
