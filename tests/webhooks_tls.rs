//! Webhooks over `https://`: the real `credstore serve` delivers to an HTTPS receiver on
//! loopback (rustls, in this test) whose certificate comes from a CA made here (rcgen),
//! for `localhost` and `127.0.0.1`. Without `--webhook-ca-file` the receiver's certificate
//! is not trusted: every attempt fails, nothing reaches the receiver, and each failure is
//! in `credstore audit` naming the certificate problem. Restarted with the CA file, the
//! server delivers every event, signed. A receiver whose certificate is for another name is
//! refused even with the CA trusted, and a CA file that is not PEM stops `serve` at start
//! (saying why without repeating the path or the file's text).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Cli, Sidecar};
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// A CA made for one test, and certificates it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "credstore test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key.
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    /// The CA certificate in a PEM file under `dir`.
    fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("webhook-ca.pem");
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTPS server on a loopback port, in its own runtime: TLS by rustls with the
/// certificate given, every POST answered 204 and recorded.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    // A refused handshake (the client did not trust us) ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| record(Arc::clone(&recorded), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Receiver {
            port,
            seen,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn record(
    seen: Arc<Mutex<Vec<Received>>>,
    request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut received = Received {
        path: request.uri().path().to_string(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: Vec::new(),
    };
    received.body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    seen.lock().expect("lock").push(received);
    let mut answer = Response::new(Empty::new());
    *answer.status_mut() = StatusCode::NO_CONTENT;
    Ok(answer)
}

/// The Standard Webhooks signature, computed here without credstore (tests/webhooks.rs
/// checks this same computation against the specification's test vector).
fn signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Short attempt timeout and backoff, so the test runs in seconds.
const FAST: &[&str] = &[
    "--webhook-timeout",
    "5s",
    "--webhook-backoff",
    "50ms",
    "--webhook-max-backoff",
    "200ms",
];

/// The `details` of every `webhook.attempt` for webhook `id`.
fn attempts(cli: &Cli, id: &str) -> Vec<Value> {
    cli.json(&["audit", "--kind", "webhook.attempt", "--json"])
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["details"].clone())
        .filter(|d| d["webhook_id"] == id)
        .collect()
}

/// Waits until `done` holds (a deadline only so that a failure ends the test instead of
/// hanging it).
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn add(cli: &Cli, url: &str) -> (String, String) {
    let hook = cli.json(&["webhook", "add", url, "--event", "key.created", "--json"]);
    (
        hook["id"].as_str().expect("id").to_string(),
        hook["secret"].as_str().expect("secret").to_string(),
    )
}

fn create(cli: &Cli, name: &str) -> u64 {
    cli.ok(&["create", "--name", name]);
    let created = cli.json(&["audit", "--kind", "key.created", "--json"]);
    created
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["details"]["name"] == name)
        .map(|e| e["seq"].as_u64().expect("seq"))
        .next_back()
        .expect("created")
}

#[test]
fn https_deliveries_need_the_receivers_ca_and_then_arrive_signed() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let receiver = Receiver::start(cert, key);
    let (cli, _admin) = Cli::init_with_admin();
    let ca_file = ca.write(&cli.data);

    // Without the CA: the certificate is not trusted, every attempt fails.
    let sidecar = Sidecar::start_with(&cli, FAST);
    let (by_name, name_secret) = add(&cli, &format!("https://localhost:{}/by-name", receiver.port));
    let (by_ip, ip_secret) = add(&cli, &format!("https://127.0.0.1:{}/by-ip?x=1", receiver.port));
    let a = create(&cli, "a");
    wait_until("two refused attempts at each webhook", || {
        [&by_name, &by_ip].iter().all(|id| attempts(&cli, id).len() >= 2)
    });
    let (_, stderr) = sidecar.stop();
    for id in [&by_name, &by_ip] {
        let failed = attempts(&cli, id);
        for d in &failed {
            assert_eq!(d["delivered"], false, "{d}");
            assert!(d["status"].is_null(), "no HTTP answer without TLS: {d}");
            let error = d["error"].as_str().expect("an error");
            assert!(
                error.contains("certificate is not trusted") && error.contains("unknown issuer"),
                "the error names the certificate problem: {error}"
            );
        }
        let numbers: Vec<u64> = failed.iter().map(|d| d["attempt"].as_u64().expect("n")).collect();
        assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "{failed:?}");
    }
    assert!(
        receiver.requests().is_empty(),
        "nothing crossed an untrusted connection"
    );
    assert!(!stderr.contains(&name_secret[6..]) && !stderr.contains(&ip_secret[6..]));

    // With the CA: both deliver, the event that failed first, then the next.
    let ca_arg = ca_file.to_str().expect("utf-8 path");
    let sidecar = Sidecar::start_with(&cli, &[FAST, &["--webhook-ca-file", ca_arg]].concat());
    let b = create(&cli, "b");
    let expected = BTreeSet::from([a, b]);
    let delivered = |path: &str| -> BTreeSet<u64> {
        receiver
            .requests()
            .iter()
            .filter(|q| q.path == path)
            .map(|q| q.json()["data"]["seq"].as_u64().expect("seq"))
            .collect()
    };
    wait_until("a and b at both receivers' paths", || {
        delivered("/by-name") == expected && delivered("/by-ip") == expected
    });
    sidecar.stop();
    for q in receiver.requests() {
        let secret = if q.path == "/by-name" { &name_secret } else { &ip_secret };
        assert_eq!(
            q.signature,
            signature(secret, &q.id, &q.timestamp, &q.body),
            "signature of {q:?}"
        );
        assert_eq!(q.json()["type"], "key.created");
    }
    for id in [&by_name, &by_ip] {
        let recorded: BTreeSet<u64> = attempts(&cli, id)
            .iter()
            .filter(|d| d["delivered"] == true && d["status"] == 204)
            .map(|d| d["event_seq"].as_u64().expect("event_seq"))
            .collect();
        assert_eq!(recorded, expected, "each delivery recorded for {id}");
    }
}

#[test]
fn a_receiver_whose_certificate_is_for_another_name_is_refused() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["wrong.example"]);
    let receiver = Receiver::start(cert, key);
    let (cli, _admin) = Cli::init_with_admin();
    let ca_file = ca.write(&cli.data);
    let ca_arg = ca_file.to_str().expect("utf-8 path");
    let sidecar = Sidecar::start_with(&cli, &[FAST, &["--webhook-ca-file", ca_arg]].concat());
    let (id, _) = add(&cli, &format!("https://localhost:{}/hook", receiver.port));
    create(&cli, "a");
    wait_until("two refused attempts", || attempts(&cli, &id).len() >= 2);
    sidecar.stop();
    for d in attempts(&cli, &id) {
        assert_eq!(d["delivered"], false, "{d}");
        let error = d["error"].as_str().expect("an error");
        assert!(
            error.contains("certificate is refused") && error.contains("not valid for name"),
            "the error names the certificate problem: {error}"
        );
    }
    assert!(receiver.requests().is_empty(), "nothing was sent to the wrong name");
}

#[test]
fn a_ca_file_that_is_not_pem_certificates_stops_serve_at_start() {
    let cli = Cli::init();
    let not_pem = cli.data.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let bad_base64 = cli.data.join("bad-base64.pem");
    std::fs::write(
        &bad_base64,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = cli.data.join("missing.pem");
    for (file, says) in [
        (&not_pem, "no certificate in it"),
        (&bad_base64, "not PEM"),
        (&missing, "cannot read it"),
    ] {
        let path = file.to_str().expect("utf-8 path");
        let mut child = cli
            .command(&["serve", "--listen", "127.0.0.1:0", "--webhook-ca-file", path])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve started with --webhook-ca-file {path}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--webhook-ca-file") && stderr.contains(says),
            "{says}: {stderr}"
        );
        // Neither the path nor the file's text: either could be a key put there by mistake.
        assert!(!stderr.contains(path) && !stderr.contains("base64!"), "{stderr}");
    }
}
