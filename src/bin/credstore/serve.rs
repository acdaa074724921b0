//! `credstore serve --listen ADDR`: the HTTP sidecar for hosts not written in Rust.
//!
//! `router()` is the one place its routes are listed; the handlers live beside this
//! file: `serve/verify.rs` (`POST /v1/keys.verify`, open to any caller), and the
//! management API for admin keys of this store only (`Authorization: Bearer KEY` or
//! `X-API-Key`; `init` prints the first one): `serve/keys.rs` (`/v1/api-keys...`),
//! `serve/directory.rs` (`/v1/plans`, `/v1/roles`, `/v1/users`), `serve/owners.rs`
//! (`/v1/owners`), `serve/vault.rs` (`/v1/vault/...`), `serve/audit.rs` (`/v1/audit`,
//! `/v1/events`), `serve/webhooks.rs` (`/v1/webhooks`, delivered by `serve/delivery.rs`);
//! `serve/openapi.rs` serves the
//! OpenAPI document derived from them (`GET /openapi.json`), and `serve/api.rs` holds what
//! they share (the admin extractor, envelopes, errors). Beside them: forward auth for
//! gateways, `GET|POST /v1/auth` and `ANY /v1/auth/{*path}`, the decision as the answer's
//! status with an RFC 9457 problem document on a denial (`serve/auth.rs`); operations,
//! `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text) and one log line per
//! request on stderr (`serve/ops.rs`); and the CLI's bridge, `DATA/serve.sock`
//! (`serve/cli_bridge.rs`). Those keep their routes in their own `routes()`, merged here.
//!
//! Answers are `{"success": true, "data": ...}` or `{"success": false, "error": {"code",
//! "message"}}`. SIGINT or SIGTERM stops accepting, lets requests in flight finish, then
//! closes the store, which flushes counters (last used, rate limits, budget spend).
//!
//! Slow and idle clients are bounded ([`ServeArgs`]): a request head must arrive within
//! `--header-timeout`, a kept-alive connection is closed after `--idle-timeout` without a
//! request, a request is answered within `--request-timeout` (408 or 503 in the same
//! envelope when it is not), and at most `--max-connections` are open, a newcomer at the
//! limit taking the place of the connection that has waited longest without a request in
//! flight (see `serve/connections.rs`).

use std::path::Path;
use std::time::Duration;

use crate::Failure;

#[cfg(feature = "http")]
mod api;
#[cfg(feature = "http")]
mod audit;
#[cfg(feature = "http")]
mod auth;
#[cfg(all(feature = "http", unix))]
mod cli_bridge;
#[cfg(feature = "http")]
mod connections;
#[cfg(feature = "http")]
mod delivery;
#[cfg(feature = "http")]
mod directory;
#[cfg(feature = "http")]
mod keys;
#[cfg(feature = "http")]
mod leaks;
#[cfg(feature = "http")]
mod lifecycle;
#[cfg(feature = "http")]
mod openapi;
#[cfg(feature = "http")]
mod ops;
#[cfg(feature = "http")]
mod owners;
#[cfg(feature = "http")]
mod usage;
#[cfg(feature = "http")]
mod vault;
#[cfg(feature = "http")]
mod verify;
#[cfg(feature = "http")]
mod webhooks;

/// `credstore serve`'s arguments.
#[derive(clap::Args)]
// Without the `http` feature there is nothing to serve, so nothing reads them.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub struct ServeArgs {
    /// The address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long)]
    listen: String,
    /// How long a client has to send a request's headers, from connecting or from its
    /// first byte after an idle spell; then the connection is closed.
    #[arg(long, env = "CREDSTORE_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = crate::parse_duration_arg)]
    header_timeout: Duration,
    /// How long a kept-alive connection may stay open with no request in flight.
    #[arg(long, env = "CREDSTORE_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = crate::parse_duration_arg)]
    idle_timeout: Duration,
    /// How long a request may take from its headers to its answer: 408 when its body is
    /// still arriving then, 503 when the answer is late.
    #[arg(long, env = "CREDSTORE_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "30s",
          value_parser = crate::parse_duration_arg)]
    request_timeout: Duration,
    /// Connections open at once; at the limit a newcomer takes the place of the one that
    /// has waited longest without a request in flight. Keep it well under `ulimit -n`.
    #[arg(long, env = "CREDSTORE_MAX_CONNECTIONS", value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// A gateway whose X-Forwarded-For (else X-Real-IP) forward auth believes: an address
    /// or CIDR range (repeatable). Default: loopback (127.0.0.0/8, ::1); `none` trusts none.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<String>,
    /// The request log on stderr: human (coloured on a terminal) or json (JSON Lines).
    /// CREDSTORE_LOG filters it (default info; debug adds /v1/auth and /v1/keys.verify).
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    /// How long one webhook delivery attempt may take (connecting included) before it
    /// counts as failed.
    #[arg(long, env = "CREDSTORE_WEBHOOK_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = crate::parse_duration_arg)]
    webhook_timeout: Duration,
    /// The wait after a failed webhook delivery attempt; it doubles after each failure in
    /// a row, up to --webhook-max-backoff.
    #[arg(long, env = "CREDSTORE_WEBHOOK_BACKOFF", value_name = "DURATION", default_value = "1s",
          value_parser = crate::parse_duration_arg)]
    webhook_backoff: Duration,
    /// The longest wait between two attempts at one webhook delivery.
    #[arg(long, env = "CREDSTORE_WEBHOOK_MAX_BACKOFF", value_name = "DURATION", default_value = "10m",
          value_parser = crate::parse_duration_arg)]
    webhook_max_backoff: Duration,
    /// A PEM file of CA certificates that https:// webhook receivers' certificates may
    /// chain to, besides Mozilla's roots (compiled in): for receivers behind a private CA.
    #[arg(long, env = "CREDSTORE_WEBHOOK_CA_FILE", value_name = "PEM")]
    webhook_ca_file: Option<std::path::PathBuf>,
    /// Do not deliver webhooks from this server (in a fleet, let one host deliver: each
    /// host that delivers sends every event, deduplicated only by the receiver).
    #[arg(long)]
    no_webhook_delivery: bool,
    /// `POST /v1/leaks` (open to any caller) admits this many reports per client address,
    /// `N/DURATION`; more are answered 429.
    #[arg(long, value_name = "N/DURATION", default_value = "60/1m")]
    leaks_rate_limit: String,
}

/// Serves the store in `data` until SIGINT or SIGTERM.
#[cfg(feature = "http")]
pub fn run(data: &Path, args: ServeArgs) -> Result<u8, Failure> {
    imp::run(data, args)
}

/// This build has no HTTP support.
#[cfg(not(feature = "http"))]
pub fn run(_data: &Path, _args: ServeArgs) -> Result<u8, Failure> {
    Err(crate::usage(
        "this credstore was built without the `http` feature: there is no `serve`",
    ))
}

#[cfg(feature = "http")]
mod imp {
    use std::io::Write;
    use std::path::Path;
    use std::pin::{Pin, pin};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes, HttpBody};
    use axum::extract::{DefaultBodyLimit, Request, State};
    use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
    use axum::http::{HeaderValue, StatusCode};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, get, post, put};
    use credstore::http::PROBLEM_JSON;
    use credstore::redact;

    use super::ServeArgs;
    use super::api::{ApiError, Shared};
    use super::auth::Gate;
    use super::connections::{self, Limits};
    use super::leaks::LeakGate;
    use super::ops::Ops;
    use super::{audit, directory, keys, leaks, lifecycle, openapi, owners, usage, vault, verify, webhooks};
    use crate::Failure;

    /// How long a shutdown waits for blocking work (a commit, a log scan) to end.
    const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    pub fn run(data: &Path, args: ServeArgs) -> Result<u8, Failure> {
        super::ops::init_logging(&args.log_format);
        // Before the store opens: a CA file that does not read is a usage error.
        let tls = super::delivery::tls_config(args.webhook_ca_file.as_deref()).map_err(crate::usage)?;
        let store = Arc::new(crate::open(data)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure {
                code: 3,
                message: format!("cannot start the HTTP runtime: {e}"),
            })?;
        #[cfg(unix)]
        let bridge = runtime.block_on(super::cli_bridge::Bridge::start(data, Arc::clone(&store)));
        let settings = super::delivery::Settings {
            timeout: args.webhook_timeout,
            backoff: args.webhook_backoff,
            max_backoff: args.webhook_max_backoff.max(args.webhook_backoff),
            tls,
        };
        let delivery =
            (!args.no_webhook_delivery).then(|| runtime.spawn(super::delivery::run(Arc::clone(&store), settings)));
        let served = runtime.block_on(serve(Arc::clone(&store), &args));
        if let Some(delivery) = delivery {
            delivery.abort();
        }
        #[cfg(unix)]
        runtime.block_on(bridge.stop());
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
        // The server and its connections are gone, so this is normally the last handle.
        let closed = match Arc::try_unwrap(store) {
            Ok(store) => store.close(),
            Err(still_shared) => still_shared.flush(),
        };
        served?;
        closed?;
        eprintln!("credstore serve: stopped; counters flushed, store closed.");
        Ok(0)
    }

    async fn serve(store: Shared, args: &ServeArgs) -> Result<(), Failure> {
        let ops = Ops::new(Arc::clone(&store));
        let gate = Gate::new(Arc::clone(&store), &args.trusted_proxies)?;
        let limit = credstore::RateLimit::parse(&args.leaks_rate_limit)
            .map_err(|e| crate::usage(format!("--leaks-rate-limit: {e}")))?;
        let leak_gate = LeakGate::new(gate.proxies().clone(), &limit);
        let listen = &args.listen;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| Failure {
            code: if e.kind() == std::io::ErrorKind::InvalidInput {
                2
            } else {
                3
            },
            message: format!("cannot listen on {}: {e}", redact::quote(listen)),
        })?;
        let addr = listener.local_addr().map_err(|e| Failure {
            code: 3,
            message: format!("listening socket: {e}"),
        })?;
        // The first line of output names the address (a port of 0 picks a free one), flushed
        // at once for whoever started us and reads the pipe.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "Listening on http://{addr}");
        let _ = stdout.flush();
        let router = router(store, &gate, &ops, &leak_gate)
            .layer(middleware::from_fn_with_state(args.request_timeout, deadline));
        let router = ops.observe(router);
        let limits = Limits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        };
        connections::serve(listener, router, limits, shutdown_signal()).await;
        Ok(())
    }

    /// The sidecar's routes: the one list of them. Each handler carries `#[utoipa::path]`
    /// and is named in `openapi::ApiDoc` too (`tests/management_api.rs` checks the two
    /// agree).
    fn router(store: Shared, gate: &Arc<Gate>, ops: &Arc<Ops>, leak_gate: &Arc<LeakGate>) -> Router {
        Router::new()
            .merge(gate.routes())
            .merge(ops.routes())
            .route("/openapi.json", get(openapi::openapi_json))
            .route("/v1/keys.verify", post(verify::verify))
            .route("/v1/api-keys", get(keys::list_keys).post(keys::create_key))
            .route("/v1/api-keys/revoke-by-key", post(keys::revoke_by_key))
            .route("/v1/api-keys/import", post(keys::import_keys))
            .route(
                "/v1/api-keys/{id}",
                get(keys::show_key).patch(keys::update_key).delete(keys::revoke_key),
            )
            .route("/v1/api-keys/{id}/disable", post(keys::disable_key))
            .route("/v1/api-keys/{id}/enable", post(keys::enable_key))
            .route("/v1/api-keys/{id}/rotate", post(keys::rotate_key))
            .route("/v1/api-keys/{id}/credits", post(keys::credit_key))
            .route("/v1/owners", get(owners::list_owners))
            .route("/v1/owners/{id}", get(owners::show_owner).put(owners::set_owner))
            .route("/v1/owners/{id}/revoke-keys", post(owners::revoke_owner_keys))
            .route("/v1/owners/{id}/disable-keys", post(owners::disable_owner_keys))
            .route("/v1/plans", get(directory::list_plans))
            .route(
                "/v1/plans/{name}",
                put(directory::set_plan).delete(directory::delete_plan),
            )
            .route("/v1/roles", get(directory::list_roles))
            .route(
                "/v1/roles/{name}",
                put(directory::set_role).delete(directory::delete_role),
            )
            .route("/v1/users", get(directory::list_users))
            .route(
                "/v1/users/{id}",
                put(directory::set_user).delete(directory::remove_user),
            )
            .route("/v1/vault/secrets", get(vault::list_secrets))
            .route(
                "/v1/vault/secrets/{name}",
                get(vault::read_secret)
                    .put(vault::put_secret)
                    .delete(vault::delete_secret),
            )
            .route("/v1/vault/rotate-master", post(vault::rotate_master))
            .route("/v1/audit", get(audit::audit))
            .route("/v1/events", get(audit::events))
            .route("/v1/usage", get(usage::usage))
            .route("/v1/webhooks", get(webhooks::list_webhooks).post(webhooks::add_webhook))
            .route("/v1/webhooks/{id}", delete(webhooks::remove_webhook))
            .route(
                "/v1/policy",
                get(lifecycle::show_policy)
                    .put(lifecycle::set_policy)
                    .delete(lifecycle::clear_policy),
            )
            .route("/v1/leaks", post(leaks::report_leaks))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "method not allowed here",
                )
            })
            .with_state(store)
            // The leak endpoint's limiter (`serve/leaks.rs`).
            .layer(axum::Extension(Arc::clone(leak_gate)))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn(envelope_errors))
    }

    /// The largest request body read (axum's default, named here so errors can say it).
    const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

    /// Puts every error answer that is not the envelope yet into it: axum's own rejections
    /// (a body over [`MAX_BODY_BYTES`], a path that does not decode) are `text/plain`.
    /// Forward auth's problem documents (`application/problem+json`) are answers already.
    /// Their text is scrubbed of secret-shaped tokens, as [`parse_json`]'s messages are.
    async fn envelope_errors(request: Request, next: Next) -> Response {
        let response = next.run(request).await;
        let status = response.status();
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes() == PROBLEM_JSON.as_bytes());
        if json || !(status.is_client_error() || status.is_server_error()) {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let (code, message) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => (
                "PAYLOAD_TOO_LARGE",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            ),
            _ => {
                let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
                let code = match status {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
                    s if s.is_server_error() => "INTERNAL_ERROR",
                    _ => "BAD_REQUEST",
                };
                let message = redact::scrub(String::from_utf8_lossy(&text).trim()).into_owned();
                if message.is_empty() {
                    (code, status.canonical_reason().unwrap_or("error").to_string())
                } else {
                    (code, message)
                }
            }
        };
        let mut answer = ApiError::new(status, code, &message).into_response();
        // What the answer said besides its body stays (`Connection: close`, say).
        parts.headers.remove(CONTENT_TYPE);
        parts.headers.remove(CONTENT_LENGTH);
        answer.headers_mut().extend(parts.headers);
        answer
    }

    /// Resolves on SIGINT or SIGTERM.
    async fn shutdown_signal() {
        let mut interrupt = pin!(async {
            // Without a handler there is no ^C to wait for.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        let mut terminate = pin!(terminate());
        std::future::poll_fn(|cx| {
            if interrupt.as_mut().poll(cx).is_ready() || terminate.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        eprintln!("credstore serve: shutting down");
    }

    #[cfg(unix)]
    async fn terminate() {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    }

    #[cfg(not(unix))]
    async fn terminate() {
        std::future::pending::<()>().await;
    }

    // -----------------------------------------------------------------------------------
    // The request timeout

    /// Answers a request that is not answered within `limit` (`--request-timeout`): 408
    /// when its body was still arriving, so the client was the slow one; 503 when the
    /// answer was late. Store work already started (a commit) is not undone: a change whose
    /// request timed out may still be applied.
    async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
        let (parts, body) = request.into_parts();
        let arrived = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Body::new(Arrival {
            body,
            arrived: Arc::clone(&arrived),
        });
        let answer = next.run(Request::from_parts(parts, body));
        if let Ok(response) = tokio::time::timeout(limit, answer).await {
            return response;
        }
        if arrived.load(Ordering::Relaxed) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                &format!(
                    "no answer within the request timeout ({limit:?}); a change it asked for may still be applied"
                ),
            )
            .into_response();
        }
        let mut response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            &format!("the request body did not arrive within the request timeout ({limit:?})"),
        )
        .into_response();
        // The rest of the body may still come: this connection cannot carry another request.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// A request body that records when it has all arrived.
    struct Arrival {
        body: Body,
        arrived: Arc<AtomicBool>,
    }

    impl HttpBody for Arrival {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
            let polled = Pin::new(&mut self.body).poll_frame(cx);
            if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
                // Read by `deadline`, in the same task.
                self.arrived.store(true, Ordering::Relaxed);
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            self.body.size_hint()
        }
    }

    #[cfg(test)]
    mod tests {
        use axum::http::HeaderMap;
        use axum::http::header::CACHE_CONTROL;
        use serde_json::Value;
        use tower::ServiceExt;

        use super::*;

        /// A body whose end never comes.
        struct Endless;

        impl HttpBody for Endless {
            type Data = Bytes;
            type Error = std::convert::Infallible;

            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
                Poll::Pending
            }
        }

        const LIMIT: Duration = Duration::from_millis(200);

        /// `POST /echo` answers its body at once; `GET /slow` takes a minute.
        async fn answer(request: Request) -> (StatusCode, HeaderMap, Bytes) {
            let app = Router::new()
                .route("/echo", post(|body: Bytes| async move { body }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        "late"
                    }),
                )
                .layer(middleware::from_fn_with_state(LIMIT, deadline));
            let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
                .await
                .expect("no answer within 10 s")
                .expect("infallible");
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            (parts.status, parts.headers, body)
        }

        fn error_code(body: &[u8]) -> Value {
            let doc: Value = serde_json::from_slice(body).expect("JSON");
            assert_eq!(doc["success"], false, "{doc}");
            doc["error"]["code"].clone()
        }

        #[tokio::test]
        async fn a_request_answered_in_time_passes_through() {
            let request = Request::post("/echo").body(Body::from("hello")).expect("request");
            let (status, headers, body) = answer(request).await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
            assert!(headers.get(CONNECTION).is_none());
        }

        #[tokio::test]
        async fn a_body_still_arriving_at_the_deadline_is_a_408_that_closes_the_connection() {
            let request = Request::post("/echo").body(Body::new(Endless)).expect("request");
            let (status, headers, body) = answer(request).await;
            assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
            assert_eq!(error_code(&body), "REQUEST_TIMEOUT");
            assert_eq!(headers.get(CONNECTION).and_then(|v| v.to_str().ok()), Some("close"));
            assert_eq!(
                headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()),
                Some("no-store")
            );
        }

        #[tokio::test]
        async fn a_late_answer_is_a_503() {
            let request = Request::get("/slow").body(Body::empty()).expect("request");
            let (status, headers, body) = answer(request).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(error_code(&body), "TIMEOUT");
            assert!(
                headers.get(CONNECTION).is_none(),
                "the connection can carry more requests"
            );
        }
    }
}
