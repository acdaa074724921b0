//! `POST /v1/leaks`: secret scanners report tokens they found (GitHub's secret scanning
//! partner format). Open to any caller, so it is bounded and tells a caller nothing about
//! keys it did not send:
//!
//! - rate limited per client address (`--leaks-rate-limit`, default 60/1m; the address is
//!   the peer, or what a trusted proxy says, as for forward auth): 429 `RATE_LIMITED` with
//!   `Retry-After` before the body is read;
//! - a body of at most [`MAX_LEAK_BODY_BYTES`] (413 `PAYLOAD_TOO_LARGE`) and
//!   [`credstore::leaks::MAX_LEAK_TOKENS`] tokens (400 `INVALID_INPUT`);
//! - the answer is one entry per token sent, in order, `{"token_raw", "token_type",
//!   "label"}`: `true_positive` for a live key of this store (revoked at once, the reason
//!   naming the report's source and url), `false_positive` for anything else (malformed,
//!   unknown, revoked already), the same shape either way. The answer is the bare array
//!   the scanners expect, not the envelope; errors are in the envelope.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CACHE_CONTROL, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use credstore::Clock as _;
use credstore::http::TrustedProxies;
use credstore::leaks::{Label, MAX_LEAK_BODY_BYTES, parse_reports};
use credstore::limits::{Gcra, Quota, RateLimit};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{ApiError, Failure, Shared, blocking};

/// How many client addresses the limiter keeps before it forgets those whose limit is
/// full again.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// The endpoint's limiter and the proxies whose word on the client's address it takes.
pub struct LeakGate {
    proxies: TrustedProxies,
    quota: Quota,
    clients: DashMap<IpAddr, Gcra>,
}

impl LeakGate {
    /// A gate admitting `limit` per client address.
    pub fn new(proxies: TrustedProxies, limit: &RateLimit) -> Arc<LeakGate> {
        Arc::new(LeakGate {
            proxies,
            quota: limit.quota(),
            clients: DashMap::new(),
        })
    }

    /// Admits one request from `client` now, or says in how many seconds it could pass.
    fn admit(&self, client: IpAddr) -> Result<(), u64> {
        let now_ns = credstore::clock::SystemClock.now_ns();
        if self.clients.len() > MAX_TRACKED_CLIENTS {
            self.clients.retain(|_, cell| cell.tat() > now_ns);
        }
        let outcome = self.clients.entry(client).or_default().check(self.quota, now_ns, 1);
        if outcome.admitted {
            Ok(())
        } else {
            Err(u64::try_from(outcome.retry_after_ns.max(0))
                .unwrap_or(0)
                .div_ceil(1_000_000_000))
        }
    }
}

/// One token found, as a scanner sends it (the OpenAPI document's schema of what
/// [`parse_reports`] reads).
#[derive(Deserialize, ToSchema)]
#[expect(dead_code, reason = "the request's schema; credstore::leaks parses the body")]
pub struct LeakDoc {
    /// The token as found.
    pub token: String,
    /// The token's type, as the scanner names it.
    #[serde(rename = "type")]
    pub token_type: String,
    /// Where it was found.
    pub url: String,
    /// Who found it (`content`, `commit`, ...).
    pub source: String,
}

/// The answer for one token.
#[derive(Serialize, ToSchema)]
pub struct LeakAnswer {
    /// The token, as sent.
    pub token_raw: String,
    /// Its type, as sent.
    pub token_type: String,
    /// `true_positive` (a live key of this store, now revoked) or `false_positive`.
    #[schema(value_type = String)]
    pub label: Label,
}

/// Takes a secret scanner's report of leaked tokens: revokes each live key of this store
/// among them at once and answers, per token, whether it was one. No key needed.
#[utoipa::path(post, path = "/v1/leaks", tag = "leaks", request_body = Vec<LeakDoc>,
    responses(
        (status = 200, description = "One label per token sent, in order (the bare array, not the envelope)", body = Vec<LeakAnswer>),
        (status = 400, description = "Not a list of {token, type, url, source}; nothing was done", body = Failure),
        (status = 413, description = "The body is too large", body = Failure),
        (status = 429, description = "Too many reports from this address (Retry-After)", body = Failure),
    ))]
pub async fn report_leaks(
    State(store): State<Shared>,
    Extension(gate): Extension<Arc<LeakGate>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| gate.proxies.client_ip(peer.ip(), &parts.headers));
    // Without a peer (never, behind the sidecar's listener) every caller shares one limit.
    let client = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Err(retry_after) = gate.admit(client) {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            &format!("too many leak reports from this address; try again in {retry_after} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        return Ok(response);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LEAK_BODY_BYTES).await else {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("a leak report is at most {MAX_LEAK_BODY_BYTES} bytes"),
        ));
    };
    let reports = parse_reports(&bytes)?;
    let labels = blocking(&store, move |s| {
        reports
            .into_iter()
            .map(|r| {
                s.report_leak(&r).map(|label| LeakAnswer {
                    token_raw: r.token.expose().to_string(),
                    token_type: r.token_type.clone(),
                    label,
                })
            })
            .collect::<credstore::Result<Vec<_>>>()
    })
    .await?;
    let mut response = (StatusCode::OK, Json(labels)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
