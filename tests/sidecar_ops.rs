//! `credstore serve`'s operations and forward auth, asked directly (no gateway):
//! `/healthz`, `/readyz`, `/metrics` as Prometheus text whose counters follow the requests,
//! the request log, and `/v1/auth` read the way Envoy and Traefik send it.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::BTreeMap;

use serde_json::Value;

mod common;
#[path = "common/gateway.rs"]
mod gateway;

use common::{Cli, Sidecar};
use gateway::{Answer, send};

/// Creates a key with these `create` options; its key and id.
fn key(cli: &Cli, args: &[&str]) -> (String, String) {
    let doc: Value = cli.json(&[&["create", "--name", "ops", "--json"], args].concat());
    (
        doc["key"].as_str().expect("key").to_string(),
        doc["id"].as_str().expect("id").to_string(),
    )
}

/// A `/metrics` page, checked line by line against the Prometheus text format (0.0.4):
/// every sample belongs to a family announced by `# TYPE` (a counter's samples end in
/// `_total`, a histogram's in `_bucket`, `_sum`, `_count`), and its value is a number.
/// Returns each sample (`name{labels}`) and its value.
#[track_caller]
fn parse_metrics(answer: &Answer) -> BTreeMap<String, f64> {
    assert_eq!(answer.status, 200, "{answer:#?}");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in answer.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#') && !line.trim().is_empty(), "stray line {line:?}");
        let (sample, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name = sample.split('{').next().expect("name");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name in {line:?}"
        );
        if let Some(labels) = sample.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
        let family = types
            .iter()
            .find(|(family, kind)| match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str())),
                _ => name == family.as_str(),
            })
            .unwrap_or_else(|| panic!("{line:?} belongs to no announced family"));
        if family.1 == "counter" {
            assert!(name.ends_with("_total"), "{line:?}");
        }
        samples.insert(sample.to_string(), value);
    }
    samples
}

fn metric(samples: &BTreeMap<String, f64>, sample: &str) -> f64 {
    samples.get(sample).copied().unwrap_or(0.0)
}

#[test]
fn healthz_readyz_and_metrics_answer_and_the_counters_follow_the_requests() {
    let cli = Cli::init();
    let (valid, _) = key(&cli, &["--rate-limit", "1/1h"]);
    let sidecar = Sidecar::start(&cli);
    let get = |path: &str, headers: &[(&str, &str)]| send(sidecar.addr, None, "GET", path, headers);

    let health = get("/healthz", &[]);
    assert_eq!(
        (health.status, health.json()["data"]["status"].clone()),
        (200, "alive".into())
    );
    let ready = get("/readyz", &[]);
    assert_eq!(ready.status, 200, "{ready:#?}");
    assert_eq!(ready.json()["data"]["status"], "ready");

    let before = parse_metrics(&get("/metrics", &[]));
    assert_eq!(metric(&before, "credstore_fleet_stale"), 0.0);
    let valid_auth = r#"credstore_decisions_total{route="/v1/auth",code="VALID"}"#;
    let limited_auth = r#"credstore_decisions_total{route="/v1/auth",code="RATE_LIMITED"}"#;
    let malformed_verify = r#"credstore_decisions_total{route="/v1/keys.verify",code="MALFORMED"}"#;
    let healthz = r#"credstore_http_requests_total{route="/healthz",status="200"}"#;
    let auth_429 = r#"credstore_http_requests_total{route="/v1/auth",status="429"}"#;
    let verifies = "credstore_verify_duration_seconds_count";
    assert_eq!(metric(&before, healthz), 1.0);

    assert_eq!(get("/v1/auth", &[("X-API-Key", &valid)]).status, 200);
    assert_eq!(get("/v1/auth", &[("X-API-Key", &valid)]).status, 429);
    let verify = common::http(
        sidecar.addr,
        "POST",
        "/v1/keys.verify",
        None,
        Some(&serde_json::json!({ "key": "not-a-key" })),
    )
    .expect("verify");
    assert_eq!(verify.body["data"]["code"], "MALFORMED", "{verify:?}");
    // No key: answered, but nothing was verified.
    assert_eq!(get("/v1/auth", &[]).status, 401);
    // A change made through the running sidecar (the CLI acts through its socket) commits.
    key(&cli, &[]);

    let after = parse_metrics(&get("/metrics", &[]));
    assert_eq!(metric(&after, valid_auth) - metric(&before, valid_auth), 1.0);
    assert_eq!(metric(&after, limited_auth) - metric(&before, limited_auth), 1.0);
    assert_eq!(
        metric(&after, malformed_verify) - metric(&before, malformed_verify),
        1.0
    );
    assert_eq!(metric(&after, auth_429), 1.0);
    assert_eq!(metric(&after, verifies) - metric(&before, verifies), 3.0);
    assert_eq!(metric(&after, healthz), 1.0);
    assert_eq!(
        metric(
            &after,
            r#"credstore_http_requests_total{route="/metrics",status="200"}"#
        ),
        1.0
    );
    assert!(metric(&after, "credstore_cached_keys") >= 1.0, "{after:?}");
    // The key was created before the sidecar opened the store: its first verify missed the
    // live map, the second did not; the malformed key never reached it.
    let misses = "credstore_cache_misses_total";
    assert_eq!(metric(&after, misses) - metric(&before, misses), 1.0);
    let ratio = metric(&after, "credstore_cache_hit_ratio");
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{ratio}");
    let commits = "credstore_commit_duration_seconds_count";
    assert!(metric(&after, commits) > metric(&before, commits), "{after:?}");
    assert!(metric(&after, r#"credstore_commit_duration_seconds_bucket{le="+Inf"}"#) >= metric(&after, commits));
    // `metric` reads a missing sample as 0: these must be on the page, and 0 here.
    for zero in ["credstore_use_log_dropped_total", "credstore_fleet_lag_seconds"] {
        assert_eq!(after.get(zero), Some(&0.0), "{zero} in {after:?}");
    }
}

#[test]
fn forward_auth_reads_the_endpoint_the_way_envoy_and_traefik_send_it() {
    let cli = Cli::init();
    let (key, id) = key(&cli, &["--allow-endpoint", "DELETE /v1/things/*", "--project", "shop"]);
    let sidecar = Sidecar::start(&cli);
    let ask = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Authorization", format!("Bearer {key}"))];
        all.extend(headers.iter().map(|(n, v)| (*n, v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        send(sidecar.addr, None, method, path, &all)
    };
    // Envoy (path_prefix /v1/auth): the method and path are the request's own.
    let ok = ask("DELETE", "/v1/auth/v1/things/7?force=1", &[]);
    assert_eq!(ok.status, 200, "{ok:#?}");
    assert_eq!(ok.header("x-credstore-key-id"), Some(id.as_str()));
    assert_eq!(ok.header("x-credstore-project"), Some("shop"));
    assert_eq!(ok.header("x-credstore-env"), Some("live"));
    assert_eq!(ok.header("x-credstore-problem"), None);
    let doc = ask("GET", "/v1/auth/v1/things/7", &[]).problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "endpoint");
    // Traefik: X-Forwarded-Method and X-Forwarded-Uri.
    let traefik = [("X-Forwarded-Method", "DELETE"), ("X-Forwarded-Uri", "/v1/things/8")];
    assert_eq!(ask("GET", "/v1/auth", &traefik).status, 200);
    // nginx: X-Original-Method and X-Original-URI, by POST as well.
    let nginx = [("X-Original-Method", "GET"), ("X-Original-URI", "/v1/things/8")];
    assert_eq!(
        ask("POST", "/v1/auth", &nginx).problem(403, "FORBIDDEN")["restriction"],
        "endpoint"
    );
    // No endpoint said: unknown, which an endpoint allowlist refuses.
    assert_eq!(
        ask("GET", "/v1/auth", &[]).problem(403, "FORBIDDEN")["restriction"],
        "endpoint"
    );
    // The problem document in a header, only when asked.
    let asked = ask("GET", "/v1/auth", &[("X-Credstore-Problem-Header", "1")]);
    let in_header: Value =
        serde_json::from_str(asked.header("x-credstore-problem").expect("the header")).expect("JSON");
    assert_eq!(in_header, asked.json());
    // A cost that is not a number is the gateway's mistake: 400, not a decision.
    ask("GET", "/v1/auth", &[("X-Credstore-Cost", "lots")]).problem(400, "BAD_REQUEST");
}

#[test]
fn forwarded_addresses_count_from_trusted_proxies_only() {
    let cli = Cli::init();
    let (key, _) = key(&cli, &["--allow-ip", "198.51.100.7"]);
    let headers = [("X-API-Key", key.as_str()), ("X-Real-IP", "198.51.100.7")];
    // Loopback is trusted by default: X-Real-IP counts.
    let trusting = Sidecar::start(&cli);
    assert_eq!(send(trusting.addr, None, "GET", "/v1/auth", &headers).status, 200);
    let xff = [("X-API-Key", key.as_str()), ("X-Forwarded-For", "198.51.100.7")];
    assert_eq!(send(trusting.addr, None, "GET", "/v1/auth", &xff).status, 200);
    // 127.0.0.2 is loopback too.
    let other: std::net::IpAddr = "127.0.0.2".parse().expect("address");
    assert_eq!(
        send(trusting.addr, Some(other), "GET", "/v1/auth", &headers).status,
        200
    );
    let _ = trusting.stop();
    // Trusting 127.0.0.1 only: 127.0.0.2 is the client, whatever it says.
    let narrow = Sidecar::start_with(&cli, &["--trusted-proxy", "127.0.0.1"]);
    let doc = send(narrow.addr, Some(other), "GET", "/v1/auth", &headers).problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "ip");
    assert_eq!(send(narrow.addr, None, "GET", "/v1/auth", &headers).status, 200);
    let _ = narrow.stop();
    // Trusting none.
    let none = Sidecar::start_with(&cli, &["--trusted-proxy", "none"]);
    send(none.addr, None, "GET", "/v1/auth", &headers).problem(403, "FORBIDDEN");
    let _ = none.stop();
    // A range that is not one is refused at start.
    let bad = cli.run(&["serve", "--listen", "127.0.0.1:0", "--trusted-proxy", "10.0.0.0/99"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("--trusted-proxy"), "{bad:?}");
}

#[test]
fn the_json_request_log_has_one_line_per_management_request_and_no_secret() {
    let cli = Cli::init();
    let (key, id) = key(&cli, &[]);
    let sidecar = Sidecar::start_with(&cli, &["--log-format", "json"]);
    let get = |path: &str, headers: &[(&str, &str)]| send(sidecar.addr, None, "GET", path, headers);
    assert_eq!(get("/healthz", &[]).status, 200);
    assert_eq!(
        get(
            &format!("/v1/api-keys/{id}"),
            &[("Authorization", &format!("Bearer {key}"))]
        )
        .status,
        403
    );
    // A key pasted into a path.
    assert_eq!(get(&format!("/v1/api-keys/{key}"), &[]).status, 401);
    // The hot path logs at debug only: not at the default level.
    assert_eq!(get("/v1/auth", &[("X-API-Key", &key)]).status, 200);
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    let routes: Vec<(&str, u64)> = requests
        .iter()
        .map(|l| {
            (
                l["route"].as_str().expect("route"),
                l["status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/healthz", 200),
            ("/v1/api-keys/{id}", 403),
            ("/v1/api-keys/{id}", 401)
        ],
        "{stderr}"
    );
    assert_eq!(
        requests[1]["path"],
        format!("/v1/api-keys/{id}"),
        "key ids are logged whole"
    );
    assert_eq!(requests[0]["method"], "GET");
    assert_eq!(requests[0]["level"], "INFO");
    assert!(requests[0]["took_us"].as_u64().is_some(), "{}", requests[0]);
    let secret = key.split('_').next_back().expect("random part");
    assert!(!stderr.contains(secret), "the key reached the log:\n{stderr}");
}
