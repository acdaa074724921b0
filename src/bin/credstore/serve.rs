//! `credstore serve --listen ADDR`: the HTTP sidecar for hosts not written in Rust.
//!
//! - `POST /v1/keys.verify`, body `{key, cost?, weight?, ip?, endpoint? ("METHOD PATH"),
//!   referrer?, require?, project?, env?}`: the decision, shaped as `verify --json`. Open to
//!   any caller that can reach the address: it tells the holder of a key about that key.
//! - The management API, for admin keys of this store only (`Authorization: Bearer KEY` or
//!   `X-API-Key`; `init` prints the first one): `GET /v1/api-keys[?project=&prefix=&status=]`,
//!   `POST /v1/api-keys` (create; the key is in the answer, once), `GET /v1/api-keys/{id}`,
//!   `DELETE /v1/api-keys/{id}[?reason=]` (revoke), `POST /v1/api-keys/{id}/rotate`
//!   (`{grace?: "24h"}`), `GET /v1/audit[?key=&kind=&since=&until=]`.
//! - Forward auth for gateways, `GET|POST /v1/auth` and `ANY /v1/auth/{*path}`: the
//!   decision as the answer's status, with an RFC 9457 problem document on a denial
//!   (`serve/auth.rs`).
//! - Operations: `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text), and one
//!   log line per request on stderr (`serve/ops.rs`).
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
mod auth;
#[cfg(all(feature = "http", unix))]
mod cli_bridge;
#[cfg(feature = "http")]
mod connections;
#[cfg(feature = "http")]
mod ops;

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
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::net::IpAddr;
    use std::path::Path;
    use std::pin::{Pin, pin};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::body::{Body, Bytes, HttpBody};
    use axum::extract::rejection::QueryRejection;
    use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, Query, Request, State};
    use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
    use axum::http::request::Parts;
    use axum::http::{HeaderValue, StatusCode};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use credstore::http::{KeySource, PROBLEM_JSON};
    use credstore::policy::{EndpointAllowlist, IpAllowlist, PermissionQuery, PermissionSet, ReferrerAllowlist};
    use credstore::record::KeyKind;
    use credstore::redact;
    use credstore::{
        Budget, Clock, Env, Error, EventFilter, Expiry, FormatLength, FormatRequest, InputError, KeyId, ListFilter,
        NewKey, Period, RateLimit, Secret, StateError, Status, Store, VerifyRequest, clock,
    };
    use serde::Deserialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::ServeArgs;
    use super::auth::Gate;
    use super::connections::{self, Limits};
    use super::ops::{Decided, Ops};
    use crate::{Failure, output};

    type Shared = Arc<Store>;

    /// How long a shutdown waits for blocking work (a commit, a log scan) to end.
    const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

    pub fn run(data: &Path, args: ServeArgs) -> Result<u8, Failure> {
        super::ops::init_logging(&args.log_format);
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
        let served = runtime.block_on(serve(Arc::clone(&store), &args));
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
        let router = router(store, &gate, &ops).layer(middleware::from_fn_with_state(args.request_timeout, deadline));
        let router = ops.observe(router);
        let limits = Limits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        };
        connections::serve(listener, router, limits, shutdown_signal()).await;
        Ok(())
    }

    /// The sidecar's routes.
    fn router(store: Shared, gate: &Arc<Gate>, ops: &Arc<Ops>) -> Router {
        Router::new()
            .merge(gate.routes())
            .merge(ops.routes())
            .route("/v1/keys.verify", post(verify))
            .route("/v1/api-keys", get(list_keys).post(create_key))
            .route("/v1/api-keys/{id}", get(show_key).delete(revoke_key))
            .route("/v1/api-keys/{id}/rotate", post(rotate_key))
            .route("/v1/audit", get(audit))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "method not allowed here",
                )
            })
            .with_state(store)
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

    // -----------------------------------------------------------------------------------
    // Handlers

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VerifyBody {
        #[serde(deserialize_with = "secret")]
        key: Secret,
        cost: Option<u64>,
        weight: Option<u32>,
        ip: Option<IpAddr>,
        endpoint: Option<String>,
        referrer: Option<String>,
        require: Option<String>,
        project: Option<String>,
        env: Option<String>,
    }

    fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }

    async fn verify(State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
        let body: VerifyBody = parse_json(&body)?;
        let require = body.require.as_deref().map(PermissionQuery::parse).transpose()?;
        let env = body.env.as_deref().map(str::parse::<Env>).transpose()?;
        let endpoint = body
            .endpoint
            .as_deref()
            .map(|e| {
                e.trim()
                    .split_once(' ')
                    .map(|(method, path)| (method, path.trim()))
                    .ok_or_else(|| ApiError::bad_request("endpoint takes \"METHOD PATH\""))
            })
            .transpose()?;
        let mut req = VerifyRequest::new(body.key.expose().trim())
            .cost(body.cost.unwrap_or(1))
            .weight(body.weight.unwrap_or(1));
        req.ip = body.ip;
        req.referrer = body.referrer.as_deref();
        req.endpoint = endpoint;
        req.require = require.as_ref();
        req.project = body.project.as_deref();
        req.env = env;
        // Inline: a verify is sub-microsecond on a cached key (see credstore::http).
        let (decision, decided) = Decided::measure(|| store.verify_with(&req), |d| d.code);
        let mut response = match decision {
            Ok(decision) => success(StatusCode::OK, output::decision_json(&decision)),
            Err(e) => ApiError::from(e).into_response(),
        };
        response.extensions_mut().insert(decided);
        Ok(response)
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ListQuery {
        project: Option<String>,
        prefix: Option<String>,
        status: Option<String>,
    }

    async fn list_keys(
        _admin: Admin,
        State(store): State<Shared>,
        query: Result<Query<ListQuery>, QueryRejection>,
    ) -> Result<Response, ApiError> {
        let Query(q) = query.map_err(ApiError::bad_query)?;
        let status = q
            .status
            .as_deref()
            .map(str::parse::<Status>)
            .transpose()
            .map_err(|e| ApiError::bad_request(&e))?;
        let filter = ListFilter {
            project: q.project,
            prefix: q.prefix,
            status,
        };
        let keys = blocking(&store, move |s| s.list(&filter)).await?;
        let docs: Vec<Value> = keys.iter().map(output::info_json).collect();
        Ok(success(StatusCode::OK, Value::Array(docs)))
    }

    /// `POST /v1/api-keys`: the fields of `credstore create`.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CreateBody {
        name: String,
        prefix: Option<String>,
        env: Option<String>,
        length: Option<usize>,
        total_length: Option<usize>,
        #[serde(default = "yes")]
        checksum: bool,
        #[serde(default)]
        new_format: bool,
        project: Option<String>,
        expires_in: Option<String>,
        expires_at: Option<String>,
        #[serde(default)]
        metadata: BTreeMap<String, String>,
        /// `N/DURATION[:name]`, as `--rate-limit`.
        #[serde(default)]
        rate_limits: Vec<String>,
        budget: Option<u64>,
        budget_period: Option<String>,
        plan: Option<String>,
        #[serde(rename = "type")]
        key_type: Option<String>,
        user: Option<String>,
        role: Option<String>,
        #[serde(default)]
        permissions: Vec<String>,
        #[serde(default)]
        allow_ips: Vec<String>,
        #[serde(default)]
        allow_referrers: Vec<String>,
        #[serde(default)]
        allow_endpoints: Vec<String>,
    }

    fn yes() -> bool {
        true
    }

    async fn create_key(Admin(admin): Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
        let body: CreateBody = parse_json(&body)?;
        let env = body.env.as_deref().map(str::parse::<Env>).transpose()?;
        let length = match (body.length, body.total_length) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give length or total_length, not both")),
            (Some(n), None) => Some(FormatLength::Random(n)),
            (None, Some(n)) => Some(FormatLength::Total(n)),
            (None, None) => None,
        };
        let role = body
            .role
            .as_deref()
            .map(credstore::policy::RoleName::parse)
            .transpose()?;
        let format = crate::new_key_format(
            &store.formats(),
            role.as_ref(),
            &FormatRequest {
                prefix: body.prefix.as_deref(),
                env,
                length,
                no_checksum: !body.checksum,
                new_format: body.new_format,
            },
        )?;
        let mut new = NewKey::new(body.name).format(format);
        new.project = body.project;
        new.metadata = body.metadata;
        new.rate_limits = body
            .rate_limits
            .iter()
            .map(|r| RateLimit::parse(r))
            .collect::<Result<_, _>>()?;
        let period = body.budget_period.as_deref().unwrap_or("monthly");
        let period: Period = period.parse().map_err(|e: InputError| ApiError::from(e))?;
        new.budget = body.budget.map(|cap| Budget::new(cap, period)).transpose()?;
        new.plan = body.plan;
        new.kind = match (body.key_type.as_deref().unwrap_or("service"), body.user) {
            ("service", None) => KeyKind::Service,
            ("personal", Some(user)) => KeyKind::Personal { user },
            ("personal", None) => return Err(InputError::KeyType("a personal token needs a user".into()).into()),
            ("service", Some(_)) => {
                return Err(InputError::KeyType("user is for personal tokens (type personal)".into()).into());
            }
            (other, _) => {
                return Err(ApiError::bad_request(&format!(
                    "type {}: use service or personal",
                    redact::quote(other)
                )));
            }
        };
        new.role = role;
        new.permissions = PermissionSet::parse(&body.permissions)?;
        new.allow_ips = IpAllowlist::new(&body.allow_ips)?;
        new.allow_referrers = ReferrerAllowlist::new(&body.allow_referrers)?;
        new.allow_endpoints = EndpointAllowlist::new(&body.allow_endpoints)?;
        new.expires = match (body.expires_in, body.expires_at) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give expires_in or expires_at, not both")),
            (Some(d), None) => Some(Expiry::In(clock::parse_duration(&d)?)),
            (None, Some(t)) => Some(Expiry::At(clock::parse_time(&t)?)),
            (None, None) => None,
        };
        let created = blocking(&store, move |s| s.create_as(admin.expose(), new)).await?;
        Ok(success(StatusCode::CREATED, output::created_json(&created, None)))
    }

    async fn show_key(
        _admin: Admin,
        State(store): State<Shared>,
        UrlPath(id): UrlPath<String>,
    ) -> Result<Response, ApiError> {
        let id = KeyId::parse(&id)?;
        let info = blocking(&store, move |s| s.get(&id)).await?;
        Ok(success(StatusCode::OK, output::info_json(&info)))
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RevokeBody {
        reason: Option<String>,
    }

    async fn revoke_key(
        _admin: Admin,
        State(store): State<Shared>,
        UrlPath(id): UrlPath<String>,
        query: Result<Query<RevokeBody>, QueryRejection>,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let id = KeyId::parse(&id)?;
        let Query(from_query) = query.map_err(ApiError::bad_query)?;
        let from_body: RevokeBody = parse_optional_json(&body)?;
        let reason = from_body.reason.or(from_query.reason);
        let info = blocking(&store, move |s| s.revoke(&id, reason.as_deref())).await?;
        Ok(success(StatusCode::OK, output::info_json(&info)))
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RotateBody {
        /// Keep the old key valid this long, e.g. `24h`.
        grace: Option<String>,
    }

    async fn rotate_key(
        _admin: Admin,
        State(store): State<Shared>,
        UrlPath(id): UrlPath<String>,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let id = KeyId::parse(&id)?;
        let body: RotateBody = parse_optional_json(&body)?;
        let grace = body
            .grace
            .as_deref()
            .map(clock::parse_duration)
            .transpose()?
            .map(|ms| Duration::from_millis(ms.unsigned_abs()));
        let rotated = blocking(&store, move |s| s.rotate(&id, grace)).await?;
        Ok(success(
            StatusCode::OK,
            output::created_json(&rotated.new, Some(&rotated.old)),
        ))
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AuditQuery {
        key: Option<String>,
        kind: Option<String>,
        since: Option<String>,
        until: Option<String>,
    }

    async fn audit(
        _admin: Admin,
        State(store): State<Shared>,
        query: Result<Query<AuditQuery>, QueryRejection>,
    ) -> Result<Response, ApiError> {
        let Query(q) = query.map_err(ApiError::bad_query)?;
        let now = clock::SystemClock.now_ms();
        let filter = EventFilter {
            key: q.key.as_deref().map(KeyId::parse).transpose()?,
            kind: q.kind,
            since: q.since.as_deref().map(|t| clock::parse_instant(t, now)).transpose()?,
            until: q.until.as_deref().map(|t| clock::parse_instant(t, now)).transpose()?,
            newest_first: false,
        };
        let events = blocking(&store, move |s| s.events(&filter)).await?;
        let docs: Vec<Value> = events.iter().map(|(seq, e)| e.to_json(*seq)).collect();
        Ok(success(StatusCode::OK, Value::Array(docs)))
    }

    // -----------------------------------------------------------------------------------
    // Admin keys, envelopes, errors

    /// An admin key of this store, checked with [`Store::authorize_admin`].
    struct Admin(Secret);

    impl FromRequestParts<Shared> for Admin {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, store: &Shared) -> Result<Self, Self::Rejection> {
            let sources = [KeySource::Bearer, KeySource::x_api_key()];
            let Some(key) = sources.iter().find_map(|s| s.find(&parts.headers)) else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "the management API needs an admin key of this store: Authorization: Bearer <key>, or X-API-Key",
                ));
            };
            match store.authorize_admin(key, "the management API") {
                Ok(_) => Ok(Admin(Secret::new(key.to_string()))),
                Err(Error::State(StateError::AdminRequired(_))) => Err(not_admin(store, key)),
                Err(e) => Err(e.into()),
            }
        }
    }

    /// 401 for a key that is no valid key at all, 403 for a valid key that is not an admin
    /// key.
    fn not_admin(store: &Store, key: &str) -> ApiError {
        // The same request `authorize_admin` makes: cost 0, weight 0, requiring `*`; it has
        // no side effect unless the key is an admin key, which it just was not.
        let everything = PermissionQuery::parse("*");
        let status = everything
            .ok()
            .and_then(|q| {
                store
                    .verify_admin(&VerifyRequest::new(key).cost(0).weight(0).require(&q))
                    .ok()
            })
            .map_or(401, |d| d.http_status());
        if status == 401 {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "not a valid key of this store",
            )
        } else {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "ADMIN_REQUIRED",
                "the management API requires an admin key of this store",
            )
        }
    }

    /// Runs store work that may wait on disk (a commit's fsync, a log scan) off the
    /// async workers.
    async fn blocking<T, F>(store: &Shared, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> credstore::Result<T> + Send + 'static,
    {
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", &e.to_string()))?
            .map_err(ApiError::from)
    }

    /// serde's messages repeat a value of the wrong type (`invalid type: string "..."`):
    /// scrubbed of secret-shaped tokens.
    ///
    /// A body must be a JSON object: serde's derive would also take an array of the fields
    /// in order (`["sk_live_...", null, ...]`), a shape no client means to send.
    fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("invalid JSON body: expected a JSON object"));
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(&format!("invalid JSON body: {}", redact::scrub(&e.to_string()))))
    }

    /// An empty body is the default.
    fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_json(body)
    }

    /// `{"success": true, "data": data}`, never cached (it may hold a key).
    fn success(status: StatusCode, data: Value) -> Response {
        let mut response = (status, Json(json!({ "success": true, "data": data }))).into_response();
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// `{"success": false, "error": {"code", "message"}}` with a status.
    #[derive(Debug)]
    struct ApiError {
        status: StatusCode,
        code: &'static str,
        message: String,
    }

    impl ApiError {
        fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
            ApiError {
                status,
                code,
                message: message.to_string(),
            }
        }

        fn bad_request(message: &str) -> Self {
            ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
        }

        /// Scrubbed as [`parse_json`]'s messages are.
        fn bad_query(rejection: QueryRejection) -> Self {
            ApiError::bad_request(&redact::scrub(&rejection.body_text()))
        }
    }

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            let body = json!({
                "success": false,
                "error": { "code": self.code, "message": self.message },
            });
            let mut response = (self.status, Json(body)).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }

    impl From<Error> for ApiError {
        fn from(e: Error) -> Self {
            let (status, code) = match &e {
                Error::Input(_) => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
                Error::State(StateError::UnknownKey(_)) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                Error::State(StateError::AdminRequired(_)) => (StatusCode::FORBIDDEN, "ADMIN_REQUIRED"),
                Error::State(_) => (StatusCode::CONFLICT, "CONFLICT"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "STORE_ERROR"),
            };
            ApiError::new(status, code, &e.to_string())
        }
    }

    impl From<InputError> for ApiError {
        fn from(e: InputError) -> Self {
            ApiError::from(Error::from(e))
        }
    }

    #[cfg(test)]
    mod tests {
        use axum::http::HeaderMap;
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
