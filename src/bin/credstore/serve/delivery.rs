//! Webhook delivery: `credstore serve` sends each registered webhook the events of the
//! kinds it asked for, in log order, one at a time, signed with the Standard Webhooks
//! scheme, and records every attempt in the log (`webhook.attempt`, visible in `credstore
//! audit`). A delivered attempt moves the webhook's position in the store, so after a
//! restart delivery resumes after the last event delivered: at least once, a duplicate
//! (same `webhook-id`) only when the server stopped between a receiver's answer and its
//! record.
//!
//! One task per webhook; a supervisor looks for added and removed webhooks once a second.
//! A failed attempt (a connection refused, no answer within `--webhook-timeout`, a status
//! other than 2xx) is retried after a backoff that doubles from `--webhook-backoff` up to
//! `--webhook-max-backoff`, for as long as the webhook is registered: later events wait
//! behind it, so a receiver sees them in order.
//!
//! The body is `{"type": KIND, "timestamp": RFC 3339, "data": EVENT}`, `EVENT` as the
//! change feed gives it (`credstore events --json`, `GET /v1/events`).
//!
//! An `https://` webhook is delivered over TLS (rustls, HTTP/1.1): the receiver's
//! certificate must chain to one of Mozilla's roots (compiled in) or to a root of
//! `--webhook-ca-file`, and be valid for the URL's host; there is no way to turn either
//! check off. A refused certificate is a failed attempt like any other, its reason in the
//! attempt's error.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use axum::http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use credstore::webhook::{self, Position, Webhook, WebhookId, WebhookUrl};
use credstore::{Attempt, Error, Event, StateError, Store};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::api::Shared;

/// How often the supervisor looks for added and removed webhooks, and how long an idle
/// webhook's task waits for a record before it checks that it is still registered.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Records read per round.
const BATCH: usize = 256;
/// The most of an error's text an attempt records.
const MAX_ERROR_LEN: usize = 200;

/// How deliveries are timed and whom they trust (`credstore serve --webhook-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// The wait after the first failed attempt; it doubles after each.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The TLS client for `https://` webhooks ([`tls_config`]).
    pub tls: Arc<rustls::ClientConfig>,
}

impl Settings {
    /// The wait after the `failed`-th failed attempt in a row (1 for the first).
    fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// The TLS client `https://` deliveries use: TLS 1.2 and 1.3 by rustls with the `ring`
/// provider, HTTP/1.1 by ALPN, trusting Mozilla's roots (webpki-roots, compiled in) and
/// every certificate in `ca_file` (PEM), if given. Certificate and host name checks are
/// always on.
///
/// # Errors
/// The file cannot be read, holds something that is not a PEM certificate, no certificate
/// at all, or one that is not a usable CA root; the message says which, naming the option
/// but repeating neither the path nor the file's text (either could be a key pasted in
/// the wrong place).
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("--webhook-ca-file: {}", pem_error(&e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--webhook-ca-file: {}", pem_error(&e)))?;
        if certs.is_empty() {
            return Err("--webhook-ca-file: no certificate in it (give PEM: -----BEGIN CERTIFICATE-----)".to_string());
        }
        for (place, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                format!(
                    "--webhook-ca-file: certificate number {} is not a CA root: {e}",
                    place + 1
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Delivers every registered webhook's events until aborted (dropping the future aborts
/// every webhook's task).
pub async fn run(store: Shared, settings: Settings) {
    let settings = Arc::new(settings);
    let mut tasks: HashMap<WebhookId, Task> = HashMap::new();
    loop {
        match on_store(&store, Store::webhooks).await {
            Ok(webhooks) => {
                tasks.retain(|id, task| !task.0.is_finished() && webhooks.iter().any(|w| &w.id == id));
                for webhook in webhooks {
                    if !tasks.contains_key(&webhook.id) {
                        let id = webhook.id.clone();
                        let task = tokio::spawn(deliver(Arc::clone(&store), webhook, Arc::clone(&settings)));
                        tasks.insert(id, Task(task));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot list the webhooks"),
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// A webhook's task, aborted when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delivers one webhook's events, in order, until it is removed.
async fn deliver(store: Shared, webhook: Webhook, settings: Arc<Settings>) {
    let id = webhook.id.clone();
    let Ok(url) = WebhookUrl::parse(&webhook.url) else {
        // Parsed when it was added; a URL that no longer parses cannot be delivered to.
        tracing::warn!(webhook = %id, "webhooks: the URL does not parse; not delivering");
        return;
    };
    let secret = match webhook::secret_bytes(store.webhook_secret(&id).expose()) {
        Ok(bytes) => bytes,
        Err(_) => return,
    };
    // Every event up to `cursor` was delivered or is not for this webhook.
    let mut cursor = webhook.delivered;
    let mut failed = webhook.failed_attempts;
    let mut read: VecDeque<(Position, Event)> = VecDeque::new();
    loop {
        let Some((at, event)) = next_event(&store, &webhook, &mut cursor, &mut read).await else {
            return;
        };
        let msg_id = webhook::message_id(&id, at);
        let body = payload(at, &event);
        loop {
            let attempt = failed.saturating_add(1);
            let (status, error) = match send(&url, &secret, &msg_id, &body, &settings).await {
                Ok(status) => (Some(status), None),
                Err(why) => (None, Some(why)),
            };
            let delivered = status.is_some_and(|s| (200..300).contains(&s));
            let error = match (status, error) {
                (Some(s), None) if !delivered => Some(format!("the receiver answered {s}")),
                (_, error) => error,
            };
            let record = Attempt {
                event: at,
                attempt,
                status,
                error: error.clone(),
                delivered,
            };
            match on_store(&store, {
                let id = id.clone();
                move |s| s.webhook_attempt(&id, record)
            })
            .await
            {
                Err(Error::State(StateError::UnknownWebhook(_))) => return,
                // Not recorded: delivery goes on; after a restart this event may be sent
                // again (same webhook-id), which at-least-once allows.
                Err(e) => tracing::warn!(webhook = %id, error = %e, "webhooks: cannot record an attempt"),
                Ok(()) => {}
            }
            if delivered {
                tracing::info!(webhook = %id, seq = at.seq, attempt, "webhooks: delivered");
                cursor = at;
                failed = 0;
                break;
            }
            failed = attempt;
            let wait = settings.backoff(failed);
            tracing::warn!(webhook = %id, seq = at.seq, attempt, error = error.as_deref().unwrap_or(""),
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "webhooks: attempt failed");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The next event after `cursor` that `webhook` is for, waiting for one to commit; moves
/// `cursor` past the events it is not for. `None` when the webhook was removed.
async fn next_event(
    store: &Shared,
    webhook: &Webhook,
    cursor: &mut Position,
    read: &mut VecDeque<(Position, Event)>,
) -> Option<(Position, Event)> {
    loop {
        while let Some((at, event)) = read.pop_front() {
            if webhook.kinds.matches(event.kind_name()) {
                return Some((at, event));
            }
            *cursor = at;
        }
        let from = *cursor;
        match on_store(store, move |s| s.events_from(from, BATCH)).await {
            Ok(events) if !events.is_empty() => read.extend(events),
            Ok(_) => {
                let id = webhook.id.clone();
                if let Err(Error::State(StateError::UnknownWebhook(_))) = on_store(store, move |s| s.webhook(&id)).await
                {
                    return None;
                }
                let seq = from.seq;
                let _ = on_store(store, move |s| Ok(s.wait_for_record(seq, LOOK_EVERY))).await;
            }
            Err(e) => {
                tracing::warn!(webhook = %webhook.id, error = %e, "webhooks: cannot read the log");
                tokio::time::sleep(LOOK_EVERY).await;
            }
        }
    }
}

/// The body delivered for the event at `at`: Standard Webhooks' `type`, `timestamp`,
/// `data`.
fn payload(at: Position, event: &Event) -> Vec<u8> {
    let doc = serde_json::json!({
        "type": event.kind_name(),
        "timestamp": credstore::clock::fmt_time(event.at),
        "data": event.to_json(at.seq),
    });
    doc.to_string().into_bytes()
}

/// One attempt: a fresh connection (TLS for `https://`), one signed POST, the answer's
/// status; an error's text when there was no answer within the attempt's timeout.
async fn send(
    url: &WebhookUrl,
    secret: &Zeroizing<Vec<u8>>,
    msg_id: &str,
    body: &[u8],
    settings: &Settings,
) -> Result<u16, String> {
    let timeout = settings.timeout;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signature = webhook::sign(secret, msg_id, timestamp, body);
    let request = Request::post(url.path())
        .header(HOST, url.authority())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("credstore/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Body::from(body.to_vec()))
        .map_err(|e| short(&format!("bad request: {e}")))?;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(url.connect_to())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        // `Some` exactly for https:// (the parser checked the host then).
        let Some(name) = url.server_name() else {
            return exchange(stream, request).await;
        };
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&settings.tls))
            .connect(name, stream)
            .await
            .map_err(|e| tls_error(&e))?;
        exchange(stream, request).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result.map_err(|e| short(&e)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// One request on an open connection (plain or TLS), its answer's status.
async fn exchange<S>(stream: S, request: Request<Body>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let connection = Task(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer: {e}"));
    drop(connection);
    answer.map(|r| r.status().as_u16())
}

/// A failed TLS handshake's text: a refused certificate says so and why (an unknown
/// issuer, a name it is not valid for, an expiry), with the names involved.
fn tls_error(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            "TLS: the receiver's certificate is not trusted: unknown issuer (not one of Mozilla's roots nor in --webhook-ca-file)".to_string()
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("TLS: the receiver's certificate is refused: {why}")
        }
        Some(other) => format!("TLS handshake: {other}"),
        None => format!("TLS handshake: {e}"),
    }
}

/// Why a `--webhook-ca-file` did not read: the I/O error's kind, or which PEM rule the
/// text broke (never the text: pem's errors can quote a line of it).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read it: {}", io.kind()),
        Error::MissingSectionEnd { .. } => "not PEM: a section has no -----END line".to_string(),
        Error::IllegalSectionStart { .. } => "not PEM: a malformed -----BEGIN line".to_string(),
        Error::Base64Decode(_) => "not PEM: a section is not base64".to_string(),
        _ => "not PEM certificates".to_string(),
    }
}

/// An error's text, cut to [`MAX_ERROR_LEN`] characters.
fn short(text: &str) -> String {
    text.chars().take(MAX_ERROR_LEN).collect()
}

/// Runs store work off the async workers.
async fn on_store<T, F>(store: &Shared, work: F) -> credstore::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> credstore::Result<T> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .unwrap_or(Err(Error::Closed))
}
