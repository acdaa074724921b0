//! Webhook delivery by the real `credstore serve` to a real receiver on loopback (an HTTP
//! server in this test) that first answers 500, then hangs past the attempt timeout, then
//! recovers; with the server SIGKILLed while an event is being retried and started again.
//! Every event of the kinds asked for is delivered (receivers dedupe by `webhook-id`), in
//! log order, none lost, every request signed as the Standard Webhooks specification says
//! (checked here with an HMAC of our own, itself checked against the specification's
//! published test vector), and every attempt is in `credstore audit`.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Cli, Sidecar};
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// What the receiver's `/hook` does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 500.
    Fail,
    /// No answer for longer than the sender's attempt timeout.
    Hang,
    /// 204.
    Accept,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    /// What `/hook` was doing when it came (`/all` always accepts).
    mode: Mode,
}

impl Received {
    fn accepted(&self) -> bool {
        self.mode == Mode::Accept || self.path == "/all"
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Seen {
    mode: Option<Mode>,
    requests: Vec<Received>,
}

/// The receiver: an HTTP server on a loopback port, in its own runtime.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let seen = Arc::new(Mutex::new(Seen {
            mode: Some(Mode::Fail),
            requests: Vec::new(),
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/all", post(hook))
            .with_state(Arc::clone(&seen));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            seen,
            _runtime: runtime,
        }
    }

    fn set(&self, mode: Mode) {
        self.seen.lock().expect("lock").mode = Some(mode);
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").requests.clone()
    }

    /// Waits until `done` holds of the requests so far (a deadline only so that a failure
    /// ends the test instead of hanging it).
    #[track_caller]
    fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}; requests: {:#?}",
                requests.iter().map(|r| (&r.path, &r.id, r.mode)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn hook(
    State(seen): State<Arc<Mutex<Seen>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mode = {
        let mut seen = seen.lock().expect("lock");
        let mode = seen.mode.unwrap_or(Mode::Fail);
        seen.requests.push(Received {
            path: uri.path().to_string(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: body.to_vec(),
            mode,
        });
        mode
    };
    match (uri.path(), mode) {
        ("/all", _) | (_, Mode::Accept) => StatusCode::NO_CONTENT,
        (_, Mode::Fail) => StatusCode::INTERNAL_SERVER_ERROR,
        (_, Mode::Hang) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::NO_CONTENT
        }
    }
}

/// The Standard Webhooks signature, computed here without credstore: base64 of
/// HMAC-SHA256 over `id.timestamp.body` under the base64-decoded secret.
fn signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[test]
fn our_signature_check_reproduces_the_specifications_test_vector() {
    assert_eq!(
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// The serve arguments: a short attempt timeout and backoff, so the test runs in seconds.
const FAST: &[&str] = &[
    "--webhook-timeout",
    "1s",
    "--webhook-backoff",
    "50ms",
    "--webhook-max-backoff",
    "300ms",
];

/// The sequence numbers of the events of `kinds` in the log.
fn seqs_of(cli: &Cli, kinds: &[&str]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for kind in kinds {
        let events = cli.json(&["audit", "--kind", kind, "--json"]);
        out.extend(
            events
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["seq"].as_u64().expect("seq")),
        );
    }
    out
}

fn create(cli: &Cli, name: &str) -> String {
    let created = cli.json(&["create", "--name", name, "--json"]);
    created["id"].as_str().expect("id").to_string()
}

#[test]
fn deliveries_survive_a_failing_a_hanging_receiver_and_a_restart_none_lost() {
    let receiver = Receiver::start();
    let (cli, _admin) = Cli::init_with_admin();
    let sidecar = Sidecar::start_with(&cli, FAST);

    let hook = cli.json(&[
        "webhook",
        "add",
        &format!("{}/hook", receiver.url),
        "--event",
        "key.created",
        "--event",
        "key.revoked",
        "--json",
    ]);
    let secret = hook["secret"].as_str().expect("secret").to_string();
    let hook_id = hook["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    // Every kind: never a webhook.* event (each delivery is one).
    let all = cli.json(&[
        "webhook",
        "add",
        &format!("{}/all", receiver.url),
        "--event",
        "*",
        "--json",
    ]);
    let all_secret = all["secret"].as_str().expect("secret").to_string();
    assert_ne!(all_secret, secret, "each webhook has its own secret");
    // Delivery starts after the webhook was added.
    let added_at = cli.json(&["audit", "--kind", "webhook.added", "--json"])[0]["seq"]
        .as_u64()
        .expect("seq");

    // 1. The receiver fails: 500, retried.
    let a = create(&cli, "a");
    receiver.wait_until("two 500s", |r| {
        r.iter().filter(|q| q.path == "/hook" && q.mode == Mode::Fail).count() >= 2
    });
    // 2. It hangs: the attempt times out (a second hanging request only comes after the
    // first attempt gave up).
    receiver.set(Mode::Hang);
    receiver.wait_until("two hanging requests", |r| {
        r.iter().filter(|q| q.path == "/hook" && q.mode == Mode::Hang).count() >= 2
    });
    // 3. It recovers.
    receiver.set(Mode::Accept);
    receiver.wait_until("a delivery", |r| r.iter().any(|q| q.path == "/hook" && q.accepted()));
    let b = create(&cli, "b");
    cli.ok(&["revoke", &a, "--yes"]);

    // 4. A restart in the middle: the receiver fails again, the server dies (SIGKILL)
    // while it retries an event, more events commit while it is down.
    let expected_before = seqs_of(&cli, &["key.created", "key.revoked"]);
    receiver.wait_until("everything so far", |r| {
        let got: BTreeSet<u64> = r
            .iter()
            .filter(|q| q.path == "/hook" && q.accepted())
            .map(|q| q.json()["data"]["seq"].as_u64().expect("seq"))
            .collect();
        expected_before
            .iter()
            .filter(|s| **s > added_at)
            .all(|s| got.contains(s))
    });
    receiver.set(Mode::Fail);
    let failed_before = receiver.requests().iter().filter(|q| q.mode == Mode::Fail).count();
    let c = create(&cli, "c");
    receiver.wait_until("a failed attempt at c", |r| {
        r.iter().filter(|q| q.path == "/hook" && q.mode == Mode::Fail).count() > failed_before
    });
    sidecar.kill_after(Duration::ZERO);
    let d = create(&cli, "d");
    cli.ok(&["revoke", &b, "--yes"]);
    receiver.set(Mode::Accept);
    let sidecar = Sidecar::start_with(&cli, FAST);
    let e = create(&cli, "e");

    // Every key.created and key.revoked after the webhook was added is delivered.
    let expected: BTreeSet<u64> = seqs_of(&cli, &["key.created", "key.revoked"])
        .into_iter()
        .filter(|s| *s > added_at)
        .collect();
    assert_eq!(expected.len(), 7, "a..e created, a and b revoked: {expected:?}");
    let delivered_seqs = |r: &[Received]| -> BTreeSet<u64> {
        r.iter()
            .filter(|q| q.path == "/hook" && q.accepted())
            .map(|q| q.json()["data"]["seq"].as_u64().expect("seq"))
            .collect()
    };
    receiver.wait_until("every event", |r| delivered_seqs(r) == expected);
    receiver.wait_until("every event at /all", |r| {
        let all: BTreeSet<u64> = r
            .iter()
            .filter(|q| q.path == "/all")
            .map(|q| q.json()["data"]["seq"].as_u64().expect("seq"))
            .collect();
        expected.is_subset(&all)
    });
    let (_, stderr) = sidecar.stop();
    let requests = receiver.requests();

    // Each request is signed with its webhook's secret, as the specification says, with
    // a current timestamp; its body is the event as the feed gives it.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_secs();
    for q in &requests {
        let secret = if q.path == "/hook" { &secret } else { &all_secret };
        assert_eq!(
            q.signature,
            signature(secret, &q.id, &q.timestamp, &q.body),
            "signature of {q:?}"
        );
        let ts: u64 = q.timestamp.parse().expect("unix seconds");
        assert!(ts.abs_diff(now) < 600, "timestamp {ts}, now {now}");
        let doc = q.json();
        let kind = doc["type"].as_str().expect("type");
        assert_eq!(doc["data"]["kind"], kind, "{doc}");
        assert!(!kind.starts_with("webhook."), "a webhook event was delivered: {doc}");
        if q.path == "/hook" {
            assert!(["key.created", "key.revoked"].contains(&kind), "{doc}");
        }
        // The id is stable per webhook and event: the same for every attempt at it.
        let seq = doc["data"]["seq"].as_u64().expect("seq");
        let hook_hex = if q.path == "/hook" {
            &hook_id
        } else {
            all["id"].as_str().expect("id")
        };
        assert_eq!(q.id, format!("msg_{}_{seq}_0", &hook_hex[3..]), "{q:?}");
    }
    // The names the events carry are the keys created, in order of the log.
    let created_names: Vec<String> = {
        let mut firsts: BTreeMap<u64, String> = BTreeMap::new();
        for q in requests.iter().filter(|q| q.path == "/hook" && q.accepted()) {
            let doc = q.json();
            if doc["type"] == "key.created" {
                let seq = doc["data"]["seq"].as_u64().expect("seq");
                firsts.insert(seq, doc["data"]["details"]["name"].as_str().expect("name").to_string());
            }
        }
        firsts.into_values().collect()
    };
    assert_eq!(created_names, ["a", "b", "c", "d", "e"]);
    // In order: each event is delivered only after every event before it was.
    let mut first_accepted: Vec<u64> = Vec::new();
    for q in requests.iter().filter(|q| q.path == "/hook" && q.accepted()) {
        let seq = q.json()["data"]["seq"].as_u64().expect("seq");
        if !first_accepted.contains(&seq) {
            first_accepted.push(seq);
        }
    }
    assert!(
        first_accepted.windows(2).all(|w| w[0] < w[1]),
        "out of order: {first_accepted:?}"
    );
    // The receiver saw each way of failing.
    let hook_requests: Vec<&Received> = requests.iter().filter(|q| q.path == "/hook").collect();
    assert!(hook_requests.iter().any(|q| q.mode == Mode::Fail));
    assert!(hook_requests.iter().any(|q| q.mode == Mode::Hang));

    // Every attempt is in the audit log: the 500s, the timeouts, the deliveries.
    let attempts = cli.json(&["audit", "--kind", "webhook.attempt", "--json"]);
    let attempts: Vec<&Value> = attempts
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| &a["details"])
        .filter(|d| d["webhook_id"] == hook_id.as_str())
        .collect();
    assert!(
        attempts.iter().any(|d| d["status"] == 500 && d["delivered"] == false),
        "a 500 attempt: {attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .any(|d| d["status"].is_null() && d["error"].as_str().is_some_and(|e| e.contains("no answer within"))),
        "a timed-out attempt: {attempts:?}"
    );
    assert!(
        attempts.iter().any(|d| d["attempt"].as_u64() > Some(1)),
        "retries are numbered"
    );
    let recorded: BTreeSet<u64> = attempts
        .iter()
        .filter(|d| d["delivered"] == true)
        .map(|d| d["event_seq"].as_u64().expect("event_seq"))
        .collect();
    assert_eq!(recorded, expected, "each delivery recorded");
    // Attempts the receiver got and the log did not record: only the one the kill cut.
    let logged_failures = attempts.iter().filter(|d| d["delivered"] == false).count();
    let seen_failures = hook_requests.iter().filter(|q| !q.accepted()).count();
    assert!(
        seen_failures >= logged_failures && seen_failures <= logged_failures + 1,
        "{seen_failures} failed requests seen, {logged_failures} recorded"
    );
    // The webhooks' positions: at the last event each was delivered.
    let list = cli.json(&["webhook", "list", "--json"]);
    let listed = list
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["id"] == hook_id.as_str())
        .expect("listed");
    assert_eq!(listed["delivered_seq"].as_u64(), expected.last().copied());
    assert_eq!(listed["failed_attempts"], 0);
    assert!(
        !list.to_string().contains(&secret[6..]),
        "the list never holds a secret"
    );
    assert!(!stderr.contains(&secret[6..]), "the log never holds a secret");
    let _ = (c, d, e);
}
