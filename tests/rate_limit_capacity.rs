//! A request heavier than a rate limit's capacity can never pass (LIMITS.md): it is
//! refused as such, with no retry time, by the library, the CLI, the layer and the
//! sidecar alike, and it consumes nothing.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use credstore::http::ApiKeyLayer;
use credstore::{Code, NewKey, RateLimit, RateLimited, VerifyRequest};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{Cli, Fixture, Sidecar, http};

fn limit(text: &str) -> RateLimit {
    RateLimit::parse(text).expect("limit")
}

/// Issue 17, item 6: `--weight 5` on a 3/1m limit.
#[test]
fn a_request_over_a_limits_capacity_is_refused_as_never_passing_and_consumes_nothing() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store
        .create(NewKey::new("three a minute").rate_limit(limit("3/1m:minute")))
        .expect("create")
        .key;
    let key = key.expose();

    let heavy = store.verify_with(&VerifyRequest::new(key).weight(5)).expect("verify");
    assert_eq!(heavy.code, Code::RateLimited);
    assert_eq!(heavy.rate_limited, Some(RateLimited::OverCapacity));
    assert_eq!(heavy.retry_after, None, "no wait makes it pass");
    let minute = &heavy.ratelimits[0];
    assert!(minute.over_capacity, "{minute:?}");
    assert_eq!((minute.limit, minute.remaining, minute.retry_after), (3, 3, None));

    // It consumed nothing: a full burst of 3 still passes, then the limit is used up, which
    // is a wait, not a never.
    let full = store.verify_with(&VerifyRequest::new(key).weight(3)).expect("verify");
    assert!(full.is_valid(), "{full:?}");
    assert!(!full.ratelimits[0].over_capacity);
    let used_up = store.verify(key).expect("verify");
    assert_eq!(used_up.code, Code::RateLimited);
    assert_eq!(used_up.rate_limited, Some(RateLimited::Exhausted));
    let retry = used_up.retry_after.expect("a retry time");
    assert!((1..=20).contains(&retry), "one request every 20 s: {retry}");
    assert_eq!(used_up.ratelimits[0].retry_after, Some(retry));
    assert!(!used_up.ratelimits[0].over_capacity);
    // A weight of exactly the capacity is no "over".
    let check = store.verify_with(&VerifyRequest::new(key).weight(3)).expect("verify");
    assert_eq!(check.rate_limited, Some(RateLimited::Exhausted));
    store.close().expect("close");
}

/// Over one limit's capacity while another limit, checked first, is merely used up: the
/// request can never pass, and that is what is said.
#[test]
fn never_passing_is_reported_over_a_limit_that_is_only_used_up() {
    let fx = Fixture::new();
    let store = fx.init();
    // Limits are checked by name: "a_hour" first, then "b_minute".
    let key = store
        .create(
            NewKey::new("two limits")
                .rate_limit(limit("6/1h:a_hour"))
                .rate_limit(limit("3/1m:b_minute")),
        )
        .expect("create")
        .key;
    let key = key.expose();
    // Use the hour up, three a minute.
    for _ in 0..2 {
        for _ in 0..3 {
            assert!(store.verify(key).expect("verify").is_valid());
        }
        fx.clock.advance(60_000);
    }
    let d = store.verify_with(&VerifyRequest::new(key).weight(5)).expect("verify");
    assert_eq!(d.code, Code::RateLimited);
    assert_eq!(d.rate_limited, Some(RateLimited::OverCapacity));
    assert_eq!(d.retry_after, None);
    let over: Vec<&str> = d
        .ratelimits
        .iter()
        .filter(|l| l.over_capacity)
        .map(|l| &*l.name)
        .collect();
    assert_eq!(over, ["b_minute"], "5 fits the hour's capacity of 6");
    assert!(d.ratelimits.iter().all(|l| l.retry_after.is_none()), "{d:?}");
    // Nothing was consumed: the minute is full, the hour used up (a wait, not a never).
    let after = store.verify(key).expect("verify");
    assert_eq!(after.rate_limited, Some(RateLimited::Exhausted), "{after:?}");
    assert!(after.retry_after.is_some());
    let minute = after
        .ratelimits
        .iter()
        .find(|l| &*l.name == "b_minute")
        .expect("minute");
    assert_eq!(minute.remaining, 3);
    store.close().expect("close");
}

#[test]
fn the_cli_says_a_request_over_capacity_never_passes() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--rate-limit", "3/1m", "--json"]);
    let key = created["key"].as_str().expect("key");

    let run = cli.run(&["verify", key, "--weight", "5", "--json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let d = run.json();
    assert_eq!(d["code"], "RATE_LIMITED");
    assert_eq!(d["status"], 429);
    assert_eq!(d["rate_limited"], "over_capacity");
    assert!(d["retry_after"].is_null(), "{d}");
    assert!(d["reason"].as_str().is_some_and(|r| r.contains("never pass")), "{d}");
    assert_eq!(d["ratelimits"][0]["over_capacity"], true, "{d}");
    assert!(d["ratelimits"][0]["retry_after"].is_null(), "{d}");

    let text = cli.run(&["verify", key, "--weight", "5"]);
    assert_eq!(text.code, Some(1), "{text:?}");
    assert!(
        text.stdout.contains("RATE_LIMITED") && text.stdout.contains("never pass"),
        "{text:?}"
    );
    assert!(!text.stdout.contains("retry after"), "{text:?}");

    // Used up, by contrast: a retry time.
    for _ in 0..3 {
        cli.ok(&["verify", key]);
    }
    let d = cli.run(&["verify", key, "--json"]).json();
    assert_eq!(d["rate_limited"], "exhausted");
    assert!(d["retry_after"].as_u64().is_some_and(|s| s > 0), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_answers_a_request_over_capacity_without_a_retry_time() {
    let fx = Fixture::new();
    let store = Arc::new(fx.init());
    let key = store
        .create(NewKey::new("k").rate_limit(limit("3/1m:minute")))
        .expect("create")
        .key;
    let layer = ApiKeyLayer::new(Arc::clone(&store));
    let app = Router::new()
        .route("/heavy", get(|| async { "done" }).layer(layer.clone().weight(5)))
        .route("/light", get(|| async { "done" }).layer(layer.weight(1)));
    let call = |path: &'static str| {
        let app = app.clone();
        let auth = format!("Bearer {}", key.expose());
        async move {
            let request = Request::get(path)
                .header("authorization", auth)
                .body(Body::empty())
                .expect("request");
            let response = app.oneshot(request).await.expect("infallible");
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (parts, doc)
        }
    };

    let (parts, doc) = call("/heavy").await;
    assert_eq!(parts.status, 429, "{doc}");
    assert!(parts.headers.get("retry-after").is_none(), "{:?}", parts.headers);
    assert_eq!(doc["code"], "RATE_LIMITED", "{doc}");
    assert_eq!(doc["reason"], "over_capacity", "{doc}");
    assert_eq!(doc["limit"], "minute", "{doc}");
    assert_eq!(doc["type"], "urn:credstore:problem:rate-limit-over-capacity", "{doc}");
    assert!(doc.get("retry_after").is_none(), "{doc}");
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.contains("never pass")),
        "{doc}"
    );
    assert_eq!(
        parts.headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()),
        Some("3"),
        "nothing consumed"
    );

    for _ in 0..3 {
        assert_eq!(call("/light").await.0.status, 200);
    }
    let (parts, doc) = call("/light").await;
    assert_eq!(parts.status, 429, "{doc}");
    assert!(parts.headers.get("retry-after").is_some(), "{:?}", parts.headers);
    assert_eq!(doc["reason"], "exhausted", "{doc}");
    assert_eq!(doc["type"], "urn:credstore:problem:rate-limited", "{doc}");
}

#[test]
fn the_sidecar_says_a_request_over_capacity_never_passes() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--rate-limit", "3/1m", "--json"]);
    let key = created["key"].as_str().expect("key");
    let sidecar = Sidecar::start(&cli);
    let reply = http(
        sidecar.addr,
        "POST",
        "/v1/keys.verify",
        None,
        Some(&json!({"key": key, "weight": 5})),
    )
    .expect("answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    let d = &reply.body["data"];
    assert_eq!(d["code"], "RATE_LIMITED", "{reply:?}");
    assert_eq!(d["rate_limited"], "over_capacity", "{reply:?}");
    assert!(d["retry_after"].is_null(), "{reply:?}");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}
