//! A model test: random sequences of operations run against a store and against a plain
//! in-memory model of what DESIGN.md and the public docs promise; every outcome must match.
//!
//! The model is written from the specification, not from the store's code:
//!
//! - a key's status at `now`: revoked (its revocation time has come) beats disabled beats
//!   expired (`now >= expires_at`) beats active; `verify` answers `REVOKED`, `DISABLED`,
//!   `EXPIRED` or `VALID` accordingly, and a valid verify sets last used to `now`;
//! - revocation is immediate and final: a revoked key cannot be updated, disabled, enabled,
//!   revoked again or rotated (`StateError::Revoked`);
//! - disable / enable are reversible (`AlreadyDisabled`, `NotDisabled`);
//! - rotation issues a new key with the same name, project, metadata, format (and disabled
//!   state: "the same settings") and the same lifetime counted from now, and revokes the old
//!   key at `min(now + grace, old expiry)`; a rotated key cannot be rotated again
//!   (`AlreadyRotated`); during the grace period the old key stays valid;
//! - `verify` accepts only registered formats: a well-formed key of a format no key was
//!   ever created with is `MALFORMED`, of a registered format but never issued `NOT_FOUND`;
//! - bad input (empty name, bad project, expiry not in the future, oversized metadata) is
//!   `Error::Input` and writes nothing; an unknown id is `StateError::UnknownKey`;
//! - `list` returns every key in creation order; reopen, rebuild and clear_cache change
//!   nothing observable (last-used times included: they are flushed on close).
//!
//! `PROPTEST_CASES` raises the number of cases (default 64, up to 40 operations each).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use credstore::{
    Code, Config, Env, Error, Expiry, Format, KeyId, KeyUpdate, ListFilter, ManualClock, NewKey, Pepper, StateError,
    Status, Store,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

const START_MS: i64 = 1_700_000_000_000;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Clock steps: small ones, and ones that land exactly on the expiries and graces below.
const STEPS: [i64; 6] = [1, SECOND, MINUTE, HOUR, DAY, 7 * DAY];
/// Lifetimes for `Expiry::In`.
const LIFETIMES: [i64; 4] = [MINUTE, HOUR, DAY, 30 * DAY];
/// Rotation grace periods.
const GRACES: [i64; 4] = [0, MINUTE, HOUR, 60 * DAY];
const NAMES: [&str; 4] = ["CI pipeline", "billing worker", "mobile app", "Ünïcode name"];
const PROJECTS: [Option<&str>; 3] = [None, Some("acme"), Some("beta-2.eu_1")];
const META_KEYS: [&str; 3] = ["team", "tier", "owner"];
const META_VALUES: [&str; 3] = ["infra", "gold", ""];

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One key format as the specification describes it.
#[derive(Debug, Clone, Copy)]
struct Spec {
    prefix: &'static str,
    env: Env,
    random_len: usize,
    checksum: bool,
}

/// The four shapes the seeds need: the default `sk_live_`, `sk_test_`, `comp_` with 27
/// random characters and no checksum (32 in all), and `cmp_`.
const SPECS: [Spec; 4] = [
    Spec {
        prefix: "sk_live_",
        env: Env::Live,
        random_len: 32,
        checksum: true,
    },
    Spec {
        prefix: "sk_test_",
        env: Env::Test,
        random_len: 32,
        checksum: true,
    },
    Spec {
        prefix: "comp_",
        env: Env::Live,
        random_len: 27,
        checksum: false,
    },
    Spec {
        prefix: "cmp_",
        env: Env::Live,
        random_len: 24,
        checksum: true,
    },
];

impl Spec {
    fn total_len(&self) -> usize {
        self.prefix.len() + self.random_len + if self.checksum { 6 } else { 0 }
    }

    /// The store's format for this spec; `None` for the default (index 0) so the default
    /// path of `NewKey` is exercised too.
    fn format(index: usize) -> Option<Format> {
        let s = SPECS[index];
        match index {
            0 => None,
            1 => Some(Format::default_for(Env::Test)),
            _ => Some(Format::new(s.prefix, s.env, s.random_len, s.checksum).expect("valid format")),
        }
    }

    /// A well-formed key of this format built from `seed` (never one the store issued:
    /// the store draws 130+ random bits).
    fn forge(&self, seed: u64) -> String {
        let mut key = self.prefix.to_string();
        let mut x = seed | 1;
        for _ in 0..self.random_len {
            // xorshift64: deterministic, plenty for a never-issued key.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            key.push(char::from(BASE62[(x % 62) as usize]));
        }
        if self.checksum {
            key.push_str(&checksum(&key));
        }
        key
    }
}

/// DESIGN.md: a CRC32 of everything before it, base62, most significant digit first,
/// left-padded to 6 characters.
fn checksum(head: &str) -> String {
    let mut n = crc32fast::hash(head.as_bytes());
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// An expiry as generated: relative to the model's `now` when the step runs.
#[derive(Debug, Clone, Copy)]
enum ExpirySpec {
    /// `Expiry::In(LIFETIMES[i])`.
    In(usize),
    /// `Expiry::At(now + offset)`; an offset <= 0 is in the past and must be refused.
    At(i64),
}

impl ExpirySpec {
    fn resolve(self, now: i64) -> (Expiry, Option<i64>) {
        match self {
            ExpirySpec::In(i) => (Expiry::In(LIFETIMES[i]), Some(now + LIFETIMES[i])),
            ExpirySpec::At(off) => (Expiry::At(now + off), (off > 0).then_some(now + off)),
        }
    }
}

/// A bad input to a create or an update.
#[derive(Debug, Clone, Copy)]
enum BadInput {
    EmptyName,
    ControlCharName,
    LongName,
    TooMuchMetadata,
    BadProject,
}

#[derive(Debug, Clone)]
enum Step {
    Create {
        spec: usize,
        name: usize,
        project: usize,
        expiry: Option<ExpirySpec>,
        meta: BTreeMap<String, String>,
        bad: Option<BadInput>,
    },
    /// Verify an issued key (any state).
    Verify(Index),
    /// Verify a well-formed key that was never issued.
    VerifyForged {
        spec: usize,
        seed: u64,
    },
    /// Verify a damaged copy of an issued key, or a string that is no key at all.
    VerifyMalformed {
        key: Index,
        how: u8,
    },
    Update {
        key: Index,
        name: Option<usize>,
        meta: Option<BTreeMap<String, String>>,
        expiry: Option<Option<ExpirySpec>>,
        bad: Option<BadInput>,
    },
    Disable(Index),
    Enable(Index),
    Revoke(Index),
    Rotate {
        key: Index,
        grace: Option<usize>,
    },
    /// A change to an id no key has.
    Unknown(u8),
    Reopen,
    Rebuild,
    ClearCache,
    Advance(usize),
}

/// What the model expects of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Input,
    UnknownKey,
    Revoked,
    AlreadyRotated,
    AlreadyDisabled,
    NotDisabled,
}

fn kind_of(e: &Error) -> Option<Kind> {
    match e {
        Error::Input(_) => Some(Kind::Input),
        Error::State(StateError::UnknownKey(_)) => Some(Kind::UnknownKey),
        Error::State(StateError::Revoked(_)) => Some(Kind::Revoked),
        Error::State(StateError::AlreadyRotated(..)) => Some(Kind::AlreadyRotated),
        Error::State(StateError::AlreadyDisabled(_)) => Some(Kind::AlreadyDisabled),
        Error::State(StateError::NotDisabled(_)) => Some(Kind::NotDisabled),
        _ => None,
    }
}

/// One key as the model sees it.
#[derive(Debug, Clone)]
struct MKey {
    id: KeyId,
    secret: String,
    spec: usize,
    name: String,
    project: String,
    metadata: BTreeMap<String, String>,
    created_at: i64,
    expires_at: Option<i64>,
    disabled: bool,
    revoked_at: Option<i64>,
    rotated: bool,
    last_used: Option<i64>,
}

impl MKey {
    fn status(&self, now: i64) -> Status {
        if self.revoked_at.is_some_and(|r| r <= now) {
            Status::Revoked
        } else if self.disabled {
            Status::Disabled
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Status::Expired
        } else {
            Status::Active
        }
    }

    fn code(&self, now: i64) -> Code {
        match self.status(now) {
            Status::Revoked => Code::Revoked,
            Status::Disabled => Code::Disabled,
            Status::Expired => Code::Expired,
            Status::Active => Code::Valid,
        }
    }
}

struct Model {
    now: i64,
    keys: Vec<MKey>,
    registered: [bool; 4],
}

struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    config: Config,
    clock: Arc<ManualClock>,
    store: Option<Store>,
    unknown: Vec<KeyId>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let clock = Arc::new(ManualClock::new(START_MS));
        let config = Config::new()
            .pepper(Pepper::from_bytes([0x5a; 32]))
            .clock(clock.clone())
            // Only close and clear_cache flush last-used times, so the model can rely on them.
            .flush_interval(Duration::from_secs(3600));
        let store = Store::init(&path, config.clone()).expect("init");
        let unknown = [
            "key_0000000000000000000000",
            "key_zzzzzzzzzzzzzzzzzzzzzz",
            "key_3Kj9aQ0000000000000007",
        ]
        .iter()
        .map(|s| KeyId::parse(s).expect("id"))
        .collect();
        Harness {
            _dir: dir,
            path,
            config,
            clock,
            store: Some(store),
            unknown,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open store")
    }

    fn close(&mut self) {
        self.store.take().expect("open store").close().expect("close");
    }

    fn open(&mut self) {
        self.store = Some(Store::open(&self.path, self.config.clone()).expect("reopen"));
    }
}

fn meta_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&META_KEYS[..]).prop_map(str::to_string),
        prop::sample::select(&META_VALUES[..]).prop_map(str::to_string),
        0..3,
    )
}

fn expiry_strategy() -> impl Strategy<Value = ExpirySpec> {
    prop_oneof![
        4 => (0..LIFETIMES.len()).prop_map(ExpirySpec::In),
        1 => prop::sample::select(&[HOUR, 2 * DAY, 0, -SECOND][..]).prop_map(ExpirySpec::At),
    ]
}

fn bad_strategy() -> impl Strategy<Value = Option<BadInput>> {
    prop_oneof![
        12 => Just(None),
        1 => Just(Some(BadInput::EmptyName)),
        1 => Just(Some(BadInput::ControlCharName)),
        1 => Just(Some(BadInput::LongName)),
        1 => Just(Some(BadInput::TooMuchMetadata)),
        1 => Just(Some(BadInput::BadProject)),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let create = (
        0..SPECS.len(),
        0..NAMES.len(),
        0..PROJECTS.len(),
        prop::option::of(expiry_strategy()),
        meta_strategy(),
        bad_strategy(),
    )
        .prop_map(|(spec, name, project, expiry, meta, bad)| Step::Create {
            spec,
            name,
            project,
            expiry,
            meta,
            bad,
        });
    let update = (
        any::<Index>(),
        prop::option::of(0..NAMES.len()),
        prop::option::of(meta_strategy()),
        prop::option::of(prop::option::of(expiry_strategy())),
        bad_strategy(),
    )
        .prop_map(|(key, name, meta, expiry, bad)| Step::Update {
            key,
            name,
            meta,
            expiry,
            bad,
        });
    prop_oneof![
        6 => create,
        8 => any::<Index>().prop_map(Step::Verify),
        2 => (0..SPECS.len(), any::<u64>()).prop_map(|(spec, seed)| Step::VerifyForged { spec, seed }),
        2 => (any::<Index>(), 0..6u8).prop_map(|(key, how)| Step::VerifyMalformed { key, how }),
        3 => update,
        3 => any::<Index>().prop_map(Step::Disable),
        3 => any::<Index>().prop_map(Step::Enable),
        1 => any::<Index>().prop_map(Step::Revoke),
        4 => (any::<Index>(), prop::option::weighted(0.75, 0..GRACES.len()))
            .prop_map(|(key, grace)| Step::Rotate { key, grace }),
        1 => (0..3u8).prop_map(Step::Unknown),
        1 => Just(Step::Reopen),
        1 => Just(Step::Rebuild),
        1 => Just(Step::ClearCache),
        4 => (0..STEPS.len()).prop_map(Step::Advance),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step_strategy(), 1..40), sample in any::<Index>()) {
        run(&steps, sample)?;
    }
}

/// Asserts that a change's result is what the model expects: Ok, or one of `allowed`.
fn expect_outcome<T>(step: &str, result: &Result<T, Error>, allowed: &[Kind]) -> Result<(), TestCaseError> {
    match (result, allowed.is_empty()) {
        (Ok(_), true) => Ok(()),
        (Ok(_), false) => Err(TestCaseError::fail(format!(
            "{step}: expected one of {allowed:?}, got Ok"
        ))),
        (Err(e), true) => Err(TestCaseError::fail(format!("{step}: expected Ok, got {e:?}"))),
        (Err(e), false) => match kind_of(e) {
            Some(k) if allowed.contains(&k) => Ok(()),
            _ => Err(TestCaseError::fail(format!(
                "{step}: expected one of {allowed:?}, got {e:?}"
            ))),
        },
    }
}

fn bad_name(bad: Option<BadInput>) -> Option<String> {
    match bad {
        Some(BadInput::EmptyName) => Some(" ".to_string()),
        Some(BadInput::ControlCharName) => Some("tab\there".to_string()),
        Some(BadInput::LongName) => Some("n".repeat(129)),
        _ => None,
    }
}

fn too_much_metadata() -> BTreeMap<String, String> {
    (0..40).map(|i| (format!("k{i}"), "v".to_string())).collect()
}

fn run(steps: &[Step], sample: Index) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut m = Model {
        now: START_MS,
        keys: Vec::new(),
        registered: [false; 4],
    };
    for (n, step) in steps.iter().enumerate() {
        let label = format!("step {n} {step:?}");
        apply(&mut h, &mut m, step, &label)?;
        check_all(&h, &m, &label)?;
        if !m.keys.is_empty() {
            check_get(&h, sample.get(&m.keys), m.now, &label)?;
        }
    }
    // Reopen at the end as well: everything acknowledged must still be there.
    h.close();
    h.open();
    check_all(&h, &m, "after final reopen")?;
    let ids: Vec<KeyId> = m.keys.iter().map(|k| k.id.clone()).collect();
    for id in ids {
        check_verify(&h, &mut m, id, "final verify")?;
    }
    check_all(&h, &m, "after final verifies")?;
    h.close();
    Ok(())
}

/// Finds the model key for an index into the issued keys, if any key was issued.
fn pick(m: &Model, ix: &Index) -> Option<usize> {
    (!m.keys.is_empty()).then(|| ix.index(m.keys.len()))
}

fn apply(h: &mut Harness, m: &mut Model, step: &Step, label: &str) -> Result<(), TestCaseError> {
    match step {
        Step::Create {
            spec,
            name,
            project,
            expiry,
            meta,
            bad,
        } => create(h, m, *spec, *name, *project, *expiry, meta, *bad, label),
        Step::Verify(ix) => match pick(m, ix) {
            Some(i) => {
                let id = m.keys[i].id.clone();
                check_verify(h, m, id, label)
            }
            None => Ok(()),
        },
        Step::VerifyForged { spec, seed } => {
            let key = SPECS[*spec].forge(*seed);
            let d = h
                .store()
                .verify(&key)
                .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
            let want = if m.registered[*spec] {
                Code::NotFound
            } else {
                Code::Malformed
            };
            prop_assert_eq!(d.code, want, "{}: forged key", label);
            prop_assert!(d.key.is_none(), "{}: a forged key has no record", label);
            Ok(())
        }
        Step::VerifyMalformed { key, how } => {
            let text = match pick(m, key) {
                None => String::new(),
                Some(i) => {
                    let k = &m.keys[i];
                    let s = &k.secret;
                    let spec = SPECS[k.spec];
                    match how {
                        0 => s[..s.len() - 1].to_string(),
                        1 => format!("{s}x"),
                        2 => {
                            // A character outside base62 in the random part.
                            let at = spec.prefix.len() + 3;
                            format!("{}-{}", &s[..at], &s[at + 1..])
                        }
                        3 if spec.checksum => {
                            // A typo: one random character changed; the checksum catches it.
                            let at = spec.prefix.len() + 5;
                            let old = s.as_bytes()[at];
                            let new = if old == b'a' { 'b' } else { 'a' };
                            format!("{}{new}{}", &s[..at], &s[at + 1..])
                        }
                        4 => format!("zz_{}", &s[spec.prefix.len()..]),
                        _ => "not a key at all".to_string(),
                    }
                }
            };
            let d = h
                .store()
                .verify(&text)
                .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
            prop_assert_eq!(d.code, Code::Malformed, "{}: {:?}", label, text);
            prop_assert_eq!(d.http_status(), 401);
            prop_assert!(d.key.is_none());
            Ok(())
        }
        Step::Update {
            key,
            name,
            meta,
            expiry,
            bad,
        } => update(h, m, key, *name, meta, *expiry, *bad, label),
        Step::Disable(ix) => {
            let Some(i) = pick(m, ix) else { return Ok(()) };
            let now = m.now;
            let k = &mut m.keys[i];
            let expected: &[Kind] = if k.status(now) == Status::Revoked {
                &[Kind::Revoked]
            } else if k.disabled {
                &[Kind::AlreadyDisabled]
            } else {
                &[]
            };
            let result = h.store().disable(&k.id);
            expect_outcome(label, &result, expected)?;
            if result.is_ok() {
                k.disabled = true;
            }
            Ok(())
        }
        Step::Enable(ix) => {
            let Some(i) = pick(m, ix) else { return Ok(()) };
            let now = m.now;
            let k = &mut m.keys[i];
            let expected: &[Kind] = if k.status(now) == Status::Revoked {
                &[Kind::Revoked]
            } else if !k.disabled {
                &[Kind::NotDisabled]
            } else {
                &[]
            };
            let result = h.store().enable(&k.id);
            expect_outcome(label, &result, expected)?;
            if result.is_ok() {
                k.disabled = false;
            }
            Ok(())
        }
        Step::Revoke(ix) => {
            let Some(i) = pick(m, ix) else { return Ok(()) };
            let now = m.now;
            let k = &mut m.keys[i];
            let expected: &[Kind] = if k.status(now) == Status::Revoked {
                &[Kind::Revoked]
            } else {
                &[]
            };
            let result = h.store().revoke(&k.id, Some("model says so"));
            expect_outcome(label, &result, expected)?;
            if let Ok(info) = &result {
                k.revoked_at = Some(now);
                prop_assert_eq!(info.status, Status::Revoked, "{}", label);
            }
            Ok(())
        }
        Step::Rotate { key, grace } => rotate(h, m, key, *grace, label),
        Step::Unknown(which) => {
            let id = h.unknown[usize::from(*which) % h.unknown.len()].clone();
            let s = h.store();
            let results = [
                s.update(
                    &id,
                    KeyUpdate {
                        name: Some("x".into()),
                        ..KeyUpdate::default()
                    },
                )
                .map(drop),
                s.disable(&id).map(drop),
                s.enable(&id).map(drop),
                s.revoke(&id, None).map(drop),
                s.rotate(&id, None).map(drop),
                s.get(&id).map(drop),
            ];
            for r in &results {
                expect_outcome(label, r, &[Kind::UnknownKey])?;
            }
            Ok(())
        }
        Step::Reopen => {
            h.close();
            h.open();
            Ok(())
        }
        Step::Rebuild => {
            h.close();
            Store::rebuild(&h.path, h.config.clone()).map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
            h.open();
            Ok(())
        }
        Step::ClearCache => {
            h.store()
                .clear_cache()
                .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
            Ok(())
        }
        Step::Advance(i) => {
            h.clock.advance(STEPS[*i]);
            m.now += STEPS[*i];
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    h: &mut Harness,
    m: &mut Model,
    spec: usize,
    name: usize,
    project: usize,
    expiry: Option<ExpirySpec>,
    meta: &BTreeMap<String, String>,
    bad: Option<BadInput>,
    label: &str,
) -> Result<(), TestCaseError> {
    let now = m.now;
    let mut new = NewKey::new(bad_name(bad).unwrap_or_else(|| NAMES[name].to_string()));
    if let Some(f) = Spec::format(spec) {
        new = new.format(f);
    }
    if let Some(p) = PROJECTS[project] {
        new = new.project(p);
    }
    if matches!(bad, Some(BadInput::BadProject)) {
        new = new.project("no/slashes");
    }
    let resolved = expiry.map(|e| e.resolve(now));
    if let Some((e, _)) = resolved {
        new = new.expires(e);
    }
    for (k, v) in meta {
        new = new.meta(k, v);
    }
    if matches!(bad, Some(BadInput::TooMuchMetadata)) {
        new.metadata = too_much_metadata();
    }
    let past = matches!(resolved, Some((_, None)));
    let expected: &[Kind] = if bad.is_some() || past { &[Kind::Input] } else { &[] };
    let result = h.store().create(new);
    expect_outcome(label, &result, expected)?;
    let Ok(created) = result else { return Ok(()) };
    let s = SPECS[spec];
    let key = created.key.expose().to_string();
    let r = &created.record;
    // The key's shape, checked against the specification, not the store's parser.
    prop_assert_eq!(key.len(), s.total_len(), "{}: key length", label);
    prop_assert!(key.starts_with(s.prefix), "{}: prefix", label);
    let body_end = s.prefix.len() + s.random_len;
    prop_assert!(
        key[s.prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}: alphabet",
        label
    );
    if s.checksum {
        prop_assert_eq!(&key[body_end..], checksum(&key[..body_end]), "{}: checksum", label);
    }
    prop_assert_eq!(&r.start, &key[..s.prefix.len() + 4], "{}: start", label);
    prop_assert_eq!(r.prefix(), s.prefix);
    prop_assert_eq!(r.env(), s.env);
    prop_assert!(r.id.as_str().starts_with("key_"));
    let mk = MKey {
        id: r.id.clone(),
        secret: key,
        spec,
        name: NAMES[name].to_string(),
        project: PROJECTS[project].unwrap_or("default").to_string(),
        metadata: meta.clone(),
        created_at: now,
        expires_at: resolved.and_then(|(_, at)| at),
        disabled: false,
        revoked_at: None,
        rotated: false,
        last_used: None,
    };
    prop_assert!(
        m.keys.iter().all(|k| k.id != mk.id && k.secret != mk.secret),
        "{}: id or key reused",
        label
    );
    m.registered[spec] = true;
    m.keys.push(mk);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn update(
    h: &mut Harness,
    m: &mut Model,
    ix: &Index,
    name: Option<usize>,
    meta: &Option<BTreeMap<String, String>>,
    expiry: Option<Option<ExpirySpec>>,
    bad: Option<BadInput>,
    label: &str,
) -> Result<(), TestCaseError> {
    let Some(i) = pick(m, ix) else { return Ok(()) };
    let now = m.now;
    let mut up = KeyUpdate {
        name: name.map(|n| NAMES[n].to_string()),
        metadata: meta.clone(),
        expires: None,
        ..KeyUpdate::default()
    };
    if let Some(n) = bad_name(bad) {
        up.name = Some(n);
    }
    if matches!(bad, Some(BadInput::TooMuchMetadata)) {
        up.metadata = Some(too_much_metadata());
    }
    let resolved = expiry.map(|e| e.map(|e| e.resolve(now)));
    up.expires = resolved.map(|e| e.map(|(x, _)| x));
    // A bad project is no input to an update.
    let bad_input = matches!(
        bad,
        Some(BadInput::EmptyName | BadInput::ControlCharName | BadInput::LongName | BadInput::TooMuchMetadata)
    ) || matches!(resolved, Some(Some((_, None))));
    let k = &mut m.keys[i];
    let revoked = k.status(now) == Status::Revoked;
    // Both refusals are right when both apply: each says nothing was written.
    let expected: &[Kind] = match (bad_input, revoked) {
        (true, true) => &[Kind::Input, Kind::Revoked],
        (true, false) => &[Kind::Input],
        (false, true) => &[Kind::Revoked],
        (false, false) => &[],
    };
    let result = h.store().update(&k.id, up);
    expect_outcome(label, &result, expected)?;
    if result.is_ok() {
        if let Some(n) = name {
            k.name = NAMES[n].to_string();
        }
        if let Some(md) = meta {
            k.metadata = md.clone();
        }
        if let Some(e) = resolved {
            k.expires_at = e.and_then(|(_, at)| at);
        }
    }
    Ok(())
}

fn rotate(h: &mut Harness, m: &mut Model, ix: &Index, grace: Option<usize>, label: &str) -> Result<(), TestCaseError> {
    let Some(i) = pick(m, ix) else { return Ok(()) };
    let now = m.now;
    let grace_ms = grace.map(|g| GRACES[g]);
    let old = m.keys[i].clone();
    let revoked = old.status(now) == Status::Revoked;
    let expected: &[Kind] = match (revoked, old.rotated) {
        // A rotated key whose grace has ended is both; either refusal is right.
        (true, true) => &[Kind::Revoked, Kind::AlreadyRotated],
        (true, false) => &[Kind::Revoked],
        (false, true) => &[Kind::AlreadyRotated],
        (false, false) => &[],
    };
    let result = h
        .store()
        .rotate(&old.id, grace_ms.map(|g| Duration::from_millis(g as u64)));
    expect_outcome(label, &result, expected)?;
    let Ok(rotated) = result else { return Ok(()) };
    let grace_end = now + grace_ms.unwrap_or(0);
    let old_revoked_at = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
    let new_key = rotated.new.key.expose().to_string();
    let s = SPECS[old.spec];
    prop_assert_eq!(new_key.len(), s.total_len(), "{}: rotated key shape", label);
    prop_assert!(new_key.starts_with(s.prefix));
    prop_assert_ne!(&new_key, &old.secret);
    let nr = &rotated.new.record;
    prop_assert_eq!(&rotated.old.id, &old.id);
    prop_assert_eq!(
        rotated.old.revoked.as_ref().map(|r| r.at),
        Some(old_revoked_at),
        "{}: old key's revocation time",
        label
    );
    prop_assert_eq!(rotated.old.rotated_to.as_ref(), Some(&nr.id));
    prop_assert_eq!(nr.rotated_from.as_ref(), Some(&old.id));
    let mk = MKey {
        id: nr.id.clone(),
        secret: new_key,
        spec: old.spec,
        name: old.name.clone(),
        project: old.project.clone(),
        metadata: old.metadata.clone(),
        created_at: now,
        expires_at: old.expires_at.map(|e| now + (e - old.created_at)),
        disabled: old.disabled,
        revoked_at: None,
        rotated: false,
        last_used: None,
    };
    let k = &mut m.keys[i];
    k.revoked_at = Some(old_revoked_at);
    k.rotated = true;
    m.keys.push(mk);
    Ok(())
}

/// Verifies the key with this id and checks the decision against the model.
fn check_verify(h: &Harness, m: &mut Model, id: KeyId, label: &str) -> Result<(), TestCaseError> {
    let now = m.now;
    let k = m.keys.iter_mut().find(|k| k.id == id).expect("model key");
    let d = h
        .store()
        .verify(&k.secret)
        .map_err(|e| TestCaseError::fail(format!("{label}: {e}")))?;
    let want = k.code(now);
    prop_assert_eq!(d.code, want, "{}: verify {} (model {:?})", label, k.id, k);
    prop_assert_eq!(d.http_status(), if want == Code::Valid { 200 } else { 401 });
    let r = d.key.as_ref().expect("a found key carries its record");
    prop_assert_eq!(&r.id, &k.id);
    prop_assert_eq!(&r.name, &k.name, "{}: decision name", label);
    prop_assert_eq!(&r.project, &k.project);
    prop_assert_eq!(&r.metadata, &k.metadata, "{}: decision metadata", label);
    prop_assert_eq!(r.expires_at, k.expires_at, "{}: decision expiry", label);
    prop_assert_eq!(r.env(), SPECS[k.spec].env);
    if want == Code::Valid {
        k.last_used = Some(k.last_used.map_or(now, |l| l.max(now)));
    }
    Ok(())
}

fn check_get(h: &Harness, k: &MKey, now: i64, label: &str) -> Result<(), TestCaseError> {
    let info = h
        .store()
        .get(&k.id)
        .map_err(|e| TestCaseError::fail(format!("{label}: get {}: {e}", k.id)))?;
    prop_assert_eq!(info.status, k.status(now), "{}: get status of {:?}", label, k);
    prop_assert_eq!(&info.record.name, &k.name, "{}: get name", label);
    prop_assert_eq!(&info.record.metadata, &k.metadata, "{}: get metadata", label);
    prop_assert_eq!(info.record.expires_at, k.expires_at, "{}: get expiry", label);
    prop_assert_eq!(info.last_used_at, k.last_used, "{}: get last used", label);
    Ok(())
}

/// `list()` holds exactly the model's keys, in creation order, each matching the model.
fn check_all(h: &Harness, m: &Model, label: &str) -> Result<(), TestCaseError> {
    let list = h
        .store()
        .list(&ListFilter::default())
        .map_err(|e| TestCaseError::fail(format!("{label}: list: {e}")))?;
    let got: Vec<&KeyId> = list.iter().map(|i| &i.record.id).collect();
    let want: Vec<&KeyId> = m.keys.iter().map(|k| &k.id).collect();
    prop_assert_eq!(got, want, "{}: list() must hold every key in creation order", label);
    for (info, k) in list.iter().zip(&m.keys) {
        let r = &info.record;
        prop_assert_eq!(info.status, k.status(m.now), "{}: status of {:?}", label, k);
        prop_assert_eq!(&r.name, &k.name);
        prop_assert_eq!(&r.project, &k.project);
        prop_assert_eq!(&r.metadata, &k.metadata);
        prop_assert_eq!(r.created_at, k.created_at);
        prop_assert_eq!(r.expires_at, k.expires_at, "{}: expiry of {}", label, k.id);
        prop_assert_eq!(r.disabled_at.is_some(), k.disabled, "{}: disabled {}", label, k.id);
        prop_assert_eq!(
            r.revoked.as_ref().map(|x| x.at),
            k.revoked_at,
            "{}: revoked {}",
            label,
            k.id
        );
        prop_assert_eq!(r.rotated_to.is_some(), k.rotated);
        prop_assert_eq!(r.prefix(), SPECS[k.spec].prefix);
        prop_assert_eq!(info.last_used_at, k.last_used, "{}: last used of {}", label, k.id);
    }
    let formats = h.store().formats();
    for (i, s) in SPECS.iter().enumerate() {
        let registered = formats
            .iter()
            .any(|f| f.prefix() == s.prefix && f.random_len() == s.random_len && f.has_checksum() == s.checksum);
        prop_assert_eq!(registered, m.registered[i], "{}: format {} registered", label, s.prefix);
    }
    Ok(())
}
