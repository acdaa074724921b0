//! `verify` with three restrictions (IP, referrer, endpoint) and a permission query,
//! against plain `verify` of a key without them, in the same run (target: the policy checks
//! add at most 30%). Use logging is off for both, to measure the checks alone.

#![expect(
    clippy::expect_used,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::sync::Arc;

use credstore::policy::{
    EndpointAllowlist, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist, RoleName, builtin_role,
};
use credstore::{Config, ManualClock, NewKey, Pepper, Store, UseLog, VerifyRequest};
use criterion::{Criterion, criterion_group, criterion_main};

fn policy(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::new()
        .pepper(Pepper::from_bytes([1; 32]))
        .clock(Arc::new(ManualClock::new(1_800_000_000_000)))
        .use_log(UseLog::Off);
    let store = Store::init(dir.path().join("d"), config).expect("init");
    let plain = store.create(NewKey::new("plain")).expect("create");
    let restricted = store
        .create(
            NewKey::new("restricted")
                .role(RoleName::parse("member").expect("role"))
                .allow_ips(IpAllowlist::new(["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]).expect("ips"))
                .allow_referrers(ReferrerAllowlist::new(["*.example.com", "example.org"]).expect("referrers"))
                .allow_endpoints(EndpointAllowlist::new(["GET /v1/users/*", "POST /v1/jobs/**"]).expect("endpoints")),
        )
        .expect("create");
    let query = PermissionQuery::parse("(docs:read OR docs:write) AND jobs:run").expect("query");
    let ip = "10.1.2.3".parse().expect("ip");
    let plain_key = plain.key.expose().to_string();
    let restricted_key = restricted.key.expose().to_string();

    let mut group = c.benchmark_group("policy");
    group.bench_function("plain", |b| {
        b.iter(|| {
            let d = store.verify(black_box(&plain_key)).expect("verify");
            assert!(d.is_valid());
            d
        })
    });
    group.bench_function("three_restrictions_and_a_query", |b| {
        b.iter(|| {
            let req = VerifyRequest::new(black_box(&restricted_key))
                .ip(ip)
                .referrer("https://app.example.com/dashboard")
                .endpoint("GET", "/v1/users/42")
                .require(&query);
            let d = store.verify_with(&req).expect("verify");
            assert!(d.is_valid());
            d
        })
    });
    group.finish();

    // Each check alone, on the same inputs as above.
    let ips = IpAllowlist::new(["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]).expect("ips");
    let referrers = ReferrerAllowlist::new(["*.example.com", "example.org"]).expect("referrers");
    let endpoints = EndpointAllowlist::new(["GET /v1/users/*", "POST /v1/jobs/**"]).expect("endpoints");
    let member = builtin_role("member").expect("member");
    let granted = member.permissions();
    let mut checks = c.benchmark_group("policy_check");
    checks.bench_function("ip", |b| b.iter(|| check_ip(&ips, ip)));
    checks.bench_function("referrer", |b| b.iter(|| check_referrer(&referrers)));
    checks.bench_function("endpoint", |b| b.iter(|| check_endpoint(&endpoints)));
    checks.bench_function("query", |b| b.iter(|| check_query(granted, &query)));
    checks.bench_function("all_four", |b| {
        b.iter(|| {
            check_ip(&ips, ip)
                && check_referrer(&referrers)
                && check_endpoint(&endpoints)
                && check_query(granted, &query)
        })
    });
    checks.finish();
}

// Each check out of line, so that a profiler (`valgrind --tool=callgrind`) reports its
// cost per call.

#[inline(never)]
fn check_ip(ips: &IpAllowlist, ip: std::net::IpAddr) -> bool {
    black_box(ips).allows(black_box(ip))
}

#[inline(never)]
fn check_referrer(referrers: &ReferrerAllowlist) -> bool {
    black_box(referrers).allows(black_box("https://app.example.com/dashboard"))
}

#[inline(never)]
fn check_endpoint(endpoints: &EndpointAllowlist) -> bool {
    black_box(endpoints).allows(black_box("GET"), black_box("/v1/users/42"))
}

#[inline(never)]
fn check_query(granted: &PermissionSet, query: &PermissionQuery) -> bool {
    black_box(granted).satisfies(black_box(query))
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = policy
}
criterion_main!(benches);
