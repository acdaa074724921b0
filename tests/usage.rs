//! Usage over time (DESIGN.md, "Usage and the customers' dashboard"): counts per key by
//! outcome and credits spent, rolled up into owners, projects and the store, in
//! zero-filled buckets kept in tiers, with a clear error past a tier's retention.

mod common;

use std::collections::BTreeMap;

use common::{Fixture, T0};
use credstore::{
    Budget, Clock, Code, Error, Granularity, InputError, NewKey, OwnerUpdate, Period, RateLimit, StateError,
    UsageCounts, UsageQuery, UsageSubject, VerifyRequest,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn counts(valid: u64, spent: u64, denied: &[(Code, u64)]) -> UsageCounts {
    UsageCounts {
        valid,
        spent,
        denied: denied.iter().copied().collect::<BTreeMap<_, _>>(),
    }
}

fn query(subject: UsageSubject, since: i64, until: i64, by: Granularity) -> UsageQuery {
    UsageQuery::new(subject, since, until, by)
}

#[test]
fn every_outcome_is_counted_per_key_and_rolled_up_into_owner_project_and_store() {
    let fx = Fixture::new();
    let store = fx.init();
    store.set_owner("acme", OwnerUpdate::default()).expect("owner");
    let a = store
        .create(
            NewKey::new("a")
                .project("shop")
                .owner("acme")
                .rate_limit(RateLimit::new("rpm", 3, 60_000).expect("limit")),
        )
        .expect("create a");
    let b = store
        .create(
            NewKey::new("b")
                .project("shop")
                .budget(Budget::new(10, Period::Total).expect("budget")),
        )
        .expect("create b");
    let c = store.create(NewKey::new("c").owner("acme")).expect("create c");
    let (ka, kb, kc) = (a.key.expose(), b.key.expose(), c.key.expose());
    let mut decided: Vec<(String, Code, u64)> = Vec::new();
    let mut verify = |key: &str, cost: u64, id: &str| {
        let d = store.verify_with(&VerifyRequest::new(key).cost(cost)).expect("verify");
        decided.push((id.to_string(), d.code, cost));
        d.code
    };
    let (ia, ib, ic) = (a.record.id.as_str(), b.record.id.as_str(), c.record.id.as_str());
    for _ in 0..5 {
        verify(ka, 1, ia); // 3 valid, then 2 rate limited
    }
    assert_eq!(verify(kb, 4, ib), Code::Valid);
    assert_eq!(verify(kb, 4, ib), Code::Valid);
    assert_eq!(verify(kb, 4, ib), Code::BudgetExhausted);
    assert_eq!(verify(kc, 7, ic), Code::Valid);
    assert_eq!(
        store
            .verify_with(&VerifyRequest::new(kc).project("other"))
            .expect("verify")
            .code,
        Code::Forbidden
    );
    store.revoke(&c.record.id, None).expect("revoke");
    assert_eq!(verify(kc, 1, ic), Code::Revoked);
    assert_eq!(store.verify("sk_live_nothing").expect("verify").code, Code::Malformed);
    let unknown = kc.replace(&kc[8..30], &"A".repeat(22));
    let unknown_code = store.verify(&unknown).expect("verify").code;
    store.flush().expect("flush");

    let q = |s: UsageSubject| {
        store
            .usage(&query(s, T0 - HOUR, T0 + HOUR, Granularity::Hour))
            .expect("usage")
    };
    assert_eq!(
        q(UsageSubject::Key(a.record.id.clone())).total,
        counts(3, 3, &[(Code::RateLimited, 2)])
    );
    assert_eq!(
        q(UsageSubject::Key(b.record.id.clone())).total,
        counts(2, 8, &[(Code::BudgetExhausted, 1)])
    );
    assert_eq!(
        q(UsageSubject::Key(c.record.id.clone())).total,
        counts(1, 7, &[(Code::Forbidden, 1), (Code::Revoked, 1)])
    );
    assert_eq!(
        q(UsageSubject::Owner("acme".into())).total,
        counts(
            4,
            10,
            &[(Code::RateLimited, 2), (Code::Forbidden, 1), (Code::Revoked, 1)]
        )
    );
    assert_eq!(
        q(UsageSubject::Project("shop".into())).total,
        counts(5, 11, &[(Code::RateLimited, 2), (Code::BudgetExhausted, 1)])
    );
    let all = q(UsageSubject::All).total;
    assert_eq!(all.valid, 6);
    assert_eq!(all.spent, 18);
    assert_eq!(
        all.denied[&Code::Malformed],
        1 + u64::from(unknown_code == Code::Malformed)
    );
    assert_eq!(all.requests(), 13);

    // Durable: the same after a close and reopen.
    store.close().expect("close");
    let store = fx.open();
    let report = store
        .usage(&query(
            UsageSubject::Owner("acme".into()),
            T0 - HOUR,
            T0 + HOUR,
            Granularity::Hour,
        ))
        .expect("usage");
    assert_eq!(report.total.valid, 4);
    assert_eq!(report.to_json()["total"]["denied"]["RATE_LIMITED"], 2);
}

#[test]
fn buckets_are_zero_filled_and_placed_by_the_moved_clock() {
    let fx = Fixture::new();
    let store = fx.init();
    let k = store.create(NewKey::new("k")).expect("create");
    let subject = UsageSubject::Key(k.record.id.clone());
    // Two uses in the first hour, none in the second, three in the fourth.
    for (at, n) in [(T0 + 10 * MINUTE, 2), (T0 + 3 * HOUR + 5 * MINUTE, 3)] {
        fx.clock.set(at);
        for _ in 0..n {
            assert!(store.verify(k.key.expose()).expect("verify").is_valid());
        }
        store.flush().expect("flush");
    }
    let report = store
        .usage(&query(subject.clone(), T0, T0 + 4 * HOUR, Granularity::Hour))
        .expect("usage");
    let per_bucket: Vec<(i64, u64)> = report.buckets.iter().map(|b| (b.start, b.counts.valid)).collect();
    assert_eq!(
        per_bucket,
        [(T0, 2), (T0 + HOUR, 0), (T0 + 2 * HOUR, 0), (T0 + 3 * HOUR, 3)]
    );
    let minutes = store
        .usage(&query(subject.clone(), T0, T0 + 4 * HOUR, Granularity::Minute))
        .expect("usage");
    assert_eq!(minutes.buckets.len(), 240);
    assert_eq!(minutes.buckets[10].counts.valid, 2);
    assert_eq!(minutes.buckets[185].counts.valid, 3);
    assert_eq!(minutes.total.valid, 5);
    let days = store
        .usage(&query(subject.clone(), T0 - DAY, T0 + DAY, Granularity::Day))
        .expect("usage");
    assert_eq!(days.buckets.iter().map(|b| b.counts.valid).collect::<Vec<_>>(), [0, 5]);
    let months = store
        .usage(&query(subject.clone(), T0 - DAY, T0 + DAY, Granularity::Month))
        .expect("usage");
    assert_eq!(months.buckets.len(), 2, "December and January");
    assert_eq!(months.buckets[1].counts.valid, 5);
    let json = months.to_json();
    assert_eq!(json["by"], "month");
    assert_eq!(json["buckets"][0]["start"], "2025-12-01T00:00:00.000Z");
    assert_eq!(json["buckets"][1]["valid"], 5);
    assert_eq!(json["total"]["valid"], 5);
}

#[test]
fn each_tier_keeps_its_retention_and_a_query_past_it_says_what_is_kept() {
    let fx = Fixture::new();
    let store = fx.init();
    let k = store.create(NewKey::new("k")).expect("create");
    let subject = UsageSubject::Key(k.record.id.clone());
    store.verify(k.key.expose()).expect("verify");
    store.flush().expect("flush");
    let ask = |since: i64, by: Granularity| store.usage(&query(subject.clone(), since, fx.clock.now_ms() + 1, by));

    fx.clock.set(T0 + 3 * DAY);
    store.flush().expect("flush");
    match ask(T0, Granularity::Minute) {
        Err(Error::Input(InputError::UsagePastRetention { by, kept, .. })) => {
            assert_eq!((by, kept.as_str()), ("minute", "48 hours"));
        }
        other => panic!("expected the retention error, got {other:?}"),
    }
    assert_eq!(ask(T0, Granularity::Hour).expect("hours").total.valid, 1);

    fx.clock.set(T0 + 100 * DAY);
    let err = ask(T0, Granularity::Hour).expect_err("past 90 days of hours");
    assert!(err.to_string().contains("hour buckets are kept for 90 days"), "{err}");
    assert_eq!(ask(T0, Granularity::Day).expect("days").total.valid, 1);

    fx.clock.set(T0 + 500 * DAY);
    assert!(ask(T0, Granularity::Day).is_err());
    assert_eq!(ask(T0, Granularity::Month).expect("months").total.valid, 1);

    // Bad ranges and unknown subjects are typed errors.
    assert!(matches!(
        store.usage(&query(subject.clone(), T0 + 10, T0, Granularity::Hour)),
        Err(Error::Input(InputError::InvalidUsageRange(_)))
    ));
    assert!(matches!(
        store.usage(&query(
            subject.clone(),
            T0 + 400 * DAY,
            T0 + 500 * DAY,
            Granularity::Minute
        )),
        Err(Error::Input(_))
    ));
    let unknown = credstore::KeyId::parse("key_0000000000000000000000").expect("id");
    assert!(matches!(
        store.usage(&query(
            UsageSubject::Key(unknown),
            T0 + 499 * DAY,
            T0 + 500 * DAY,
            Granularity::Day
        )),
        Err(Error::State(StateError::UnknownKey(_)))
    ));
}

#[test]
fn counting_can_be_switched_off() {
    let mut fx = Fixture::new();
    fx.config = fx.config.clone().usage_counting(false);
    let store = fx.init();
    let k = store.create(NewKey::new("k")).expect("create");
    store.verify(k.key.expose()).expect("verify");
    store.flush().expect("flush");
    let report = store
        .usage(&query(UsageSubject::All, T0 - HOUR, T0 + HOUR, Granularity::Hour))
        .expect("usage");
    assert!(report.total.is_empty());
}
