//! `credstore demo`: issuing, verifying, every denial so far, revoking and auditing, on a
//! throwaway store whose clock the demo moves.

use std::sync::Arc;
use std::time::Duration;

use credstore::{
    Budget, Config, Env, Expiry, Format, ListFilter, ManualClock, NewKey, Period, Plan, RateLimit, Store, VerifyRequest,
};

use credstore::policy::{EndpointAllowlist, IpAllowlist, PermissionQuery, RoleName, User};

use crate::{Failure, output};

fn usage_error() -> Failure {
    Failure {
        code: 2,
        message: "bad demo address".into(),
    }
}

const HOUR_MS: i64 = 3_600_000;

pub fn run() -> Result<(), Failure> {
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| Failure {
        code: 3,
        message: format!("no randomness: {e}"),
    })?;
    let dir = std::env::temp_dir().join(format!("credstore-demo-{}", hex::encode(suffix)));
    let result = walk(&dir);
    // The demo store is throwaway: remove it whatever happened.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn walk(dir: &std::path::Path) -> Result<(), Failure> {
    let clock = Arc::new(ManualClock::new(jiff::Timestamp::now().as_millisecond()));
    let store = Store::init(dir, Config::new().clock(clock.clone()))?;
    outln!("== A throwaway store in {}\n", dir.display());

    outln!("== Issuing keys (each is shown once; only a keyed hash is stored)");
    let live = store.create(
        NewKey::new("Production backend")
            .project("acme")
            .meta("team", "payments"),
    )?;
    let test = store.create(
        NewKey::new("CI pipeline")
            .project("acme")
            .format(Format::default_for(Env::Test)),
    )?;
    let comp = store.create(NewKey::new("Compresh client").format(Format::new("comp_", Env::Live, 27, false)?))?;
    for k in [&live, &test, &comp] {
        outln!("  {:<20} {}  -> {}", k.record.name, k.record.id, k.key.expose());
    }

    let show = |label: &str, key: &str| -> Result<(), Failure> {
        print!("  {label:<38} ");
        output::print_decision(&store.verify(key)?, false);
        Ok(())
    };
    outln!("\n== Verifying");
    show("live key", live.key.expose())?;
    show("test key", test.key.expose())?;
    show("comp_ key (32 characters, no checksum)", comp.key.expose())?;

    outln!("\n== Rejected before any lookup (MALFORMED)");
    let live_text = live.key.expose();
    let swapped = if live_text.get(10..11) == Some("a") { "b" } else { "a" };
    let mut typo = live_text.to_string();
    typo.replace_range(10..11, swapped);
    show("a typo (checksum mismatch)", &typo)?;
    show("an unknown prefix", &live_text.replacen("sk_live_", "pk_live_", 1))?;
    show("a comp_ key one character short", &comp.key.expose()[..31])?;

    outln!("\n== Well-formed but never issued (NOT_FOUND)");
    show(
        "a forged key with a valid checksum",
        Format::default_for(Env::Live).generate().expose(),
    )?;

    outln!("\n== Disable and enable (reversible)");
    store.disable(&live.record.id)?;
    show("after disable", live.key.expose())?;
    store.enable(&live.record.id)?;
    show("after enable", live.key.expose())?;

    outln!("\n== Expiry");
    let short = store.create(NewKey::new("One-hour token").expires(Expiry::In(HOUR_MS)))?;
    show("fresh one-hour token", short.key.expose())?;
    clock.advance(2 * HOUR_MS);
    outln!("  (two hours pass)");
    show("the same token", short.key.expose())?;

    outln!("\n== Rotation with a 10-minute grace period");
    let rotated = store.rotate(&test.record.id, Some(Duration::from_secs(600)))?;
    show("old key, during the grace period", test.key.expose())?;
    show("new key", rotated.new.key.expose())?;
    clock.advance(11 * 60_000);
    outln!("  (eleven minutes pass)");
    show("old key, after the grace period", test.key.expose())?;

    outln!("\n== Rate limits: 3 per minute (a burst of 3, then one every 20 s)");
    let limited = store.create(NewKey::new("Rate-limited script").rate_limit(RateLimit::parse("3/1m:minute")?))?;
    for i in 1..=4 {
        show(&format!("request {i}"), limited.key.expose())?;
    }
    clock.advance(20_000);
    outln!("  (20 seconds pass)");
    show("request 5", limited.key.expose())?;

    outln!("\n== Plans and budgets: the starter plan allows 5 units a month");
    store.set_plan(Plan::new(
        "starter",
        vec![RateLimit::parse("100/1m:minute")?],
        Some(Budget::new(5, Period::Monthly { anchor_day: 1 })?),
    )?)?;
    let metered = store.create(NewKey::new("Metered client").plan("starter"))?;
    for i in 1..=3 {
        print!("  {:<38} ", format!("request {i}, cost 2"));
        output::print_decision(
            &store.verify_with(&VerifyRequest::new(metered.key.expose()).cost(2))?,
            false,
        );
    }
    let sandbox = store.create(
        NewKey::new("Sandbox client")
            .plan("starter")
            .format(Format::default_for(Env::Test)),
    )?;
    print!("  {:<38} ", "a test key, cost 10 (never charged)");
    output::print_decision(
        &store.verify_with(&VerifyRequest::new(sandbox.key.expose()).cost(10))?,
        false,
    );
    store.set_plan(Plan::new(
        "starter",
        vec![RateLimit::parse("100/1m:minute")?],
        Some(Budget::new(50, Period::Monthly { anchor_day: 1 })?),
    )?)?;
    outln!("  (the starter plan is raised to 50 units: every key on it follows at once)");
    print!("  {:<38} ", "request 4, cost 2");
    output::print_decision(
        &store.verify_with(&VerifyRequest::new(metered.key.expose()).cost(2))?,
        false,
    );

    outln!("\n== Access policy: restrictions (FORBIDDEN) and permissions (INSUFFICIENT_PERMISSIONS)");
    let restricted = store.create(
        NewKey::new("Office-only reporting key")
            .project("acme")
            .role(RoleName::parse("viewer")?)
            .allow_ips(IpAllowlist::new(["10.0.0.0/8", "2001:db8::/32"])?)
            .allow_endpoints(EndpointAllowlist::new(["GET /v1/reports/*"])?),
    )?;
    let office: std::net::IpAddr = "10.1.2.3".parse().map_err(|_| usage_error())?;
    let cafe: std::net::IpAddr = "198.51.100.7".parse().map_err(|_| usage_error())?;
    let read = PermissionQuery::parse("reports:read")?;
    let write = PermissionQuery::parse("reports:read AND (reports:write OR reports:admin)")?;
    let policy = |label: &str, req: VerifyRequest<'_>| -> Result<(), Failure> {
        print!("  {label:<38} ");
        output::print_decision(&store.verify_with(&req)?, false);
        Ok(())
    };
    let k = restricted.key.expose();
    let base = || VerifyRequest::new(k).ip(office).endpoint("GET", "/v1/reports/q3");
    policy("from the office, GET a report", base().require(&read))?;
    policy("from a cafe", base().ip(cafe))?;
    policy("POST instead of GET", base().endpoint("POST", "/v1/reports/q3"))?;
    policy("pinned to another project", base().project("globex"))?;
    policy("a viewer asked to write", base().require(&write))?;
    let mut dana = User::new("dana@acme.test")?;
    dana.memberships.insert("acme".into(), RoleName::parse("member")?);
    store.set_user(dana.clone())?;
    let token = store.create(NewKey::new("Dana's laptop").project("acme").personal("dana@acme.test"))?;
    let run = PermissionQuery::parse("jobs:run")?;
    policy(
        "Dana's personal token runs a job",
        VerifyRequest::new(token.key.expose()).require(&run),
    )?;
    dana.memberships.insert("acme".into(), RoleName::parse("viewer")?);
    store.set_user(dana)?;
    outln!("  (Dana is demoted to viewer in acme)");
    policy(
        "the same token, the next request",
        VerifyRequest::new(token.key.expose()).require(&run),
    )?;

    outln!("\n== Revocation: immediate and final");
    store.revoke(&live.record.id, Some("leaked in a screenshot"))?;
    show("after revoke", live.key.expose())?;
    match store.enable(&live.record.id) {
        Err(e) => outln!("  enable after revoke is refused: {e}"),
        Ok(_) => outln!("  BUG: a revoked key was enabled"),
    }

    outln!("\n== The key dashboard");
    output::print_list(&store.list(&ListFilter::default())?, false);

    outln!("\n== The audit log");
    output::print_events(&store.events(&Default::default())?, false);
    let check = store.verify_log()?;
    outln!(
        "\n  audit verify: intact, {} records, {} bytes",
        check.records,
        check.bytes
    );
    store.close()?;
    Ok(())
}
