//! HTTP (feature `http`): a tower [`Layer`](tower::Layer) for axum that verifies the API
//! key of every request, and answers the denials itself.
//!
//! [`ApiKeyLayer`] reads the key from `Authorization: Bearer` or `X-API-Key` (see
//! [`KeySource`]), takes the client's address from the connection (axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo)) or, only when the peer is one of
//! the [`TrustedProxies`], from `X-Forwarded-For`, passes the method and path as the
//! endpoint and the `Referer` (else `Origin`) header as the referrer, and verifies with the
//! route's cost, weight and required permissions. Then:
//!
//! | decision | answer |
//! | --- | --- |
//! | no key, `MALFORMED`, `NOT_FOUND`, `REVOKED`, `DISABLED`, `EXPIRED` | 401, one body for all: it does not tell whether a key exists |
//! | `BUDGET_EXHAUSTED` | 402 |
//! | `FORBIDDEN` (with the `restriction`), `INSUFFICIENT_PERMISSIONS` | 403 |
//! | `RATE_LIMITED` | 429 with `Retry-After` |
//! | `VALID` | the handler runs; the [`Decision`](crate::Decision) is a request extension |
//!
//! Denials carry an RFC 9457 `application/problem+json` body (`type`, `title`, `status`,
//! `detail`, and `code`: `UNAUTHORIZED` for every 401, else the decision's code). Every
//! response of a key with rate limits, the handler's included, carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (unix seconds; the
//! limit closest to refusing) and the IETF draft fields `RateLimit-Policy`
//! (`"name";q=LIMIT;w=WINDOW_SECONDS` per limit) and `RateLimit` (`"name";r=REMAINING;t=SECONDS_TO_RESET`);
//! [`ApiKeyLayer::rate_limit_fields`] keeps one family of them, or none.
//!
//! # Blocking
//!
//! [`Store::verify_with`](crate::Store::verify_with) is synchronous and is called inline, on
//! the async task that serves the request. That is deliberate: a verify of a cached key takes
//! well under a microsecond (a keyed hash, a map lookup, a few atomics), and a cache miss
//! reads sled once, usually from its page cache; handing that to `spawn_blocking` would cost
//! more than the work. Two waits can happen: the first verify of a key after start reads it
//! from disk, and a charge that crosses a budget's persisted high-water mark waits for one
//! log fsync (once per chunk of spend, see `docs/DURABILITY.md`).
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//!
//! use axum::{Extension, Router, routing::{get, post}};
//! use credstore::http::{ApiKeyLayer, TrustedProxies};
//! use credstore::policy::PermissionQuery;
//! use credstore::{Config, Decision, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Arc::new(Store::init(dir.path().join("data"), Config::new())?);
//! let auth = ApiKeyLayer::new(Arc::clone(&store))
//!     .trusted_proxies(TrustedProxies::new(["10.0.0.0/8"])?);
//!
//! async fn whoami(Extension(decision): Extension<Decision>) -> String {
//!     decision.key.map(|k| k.name.clone()).unwrap_or_default()
//! }
//!
//! let app: Router = Router::new()
//!     // Every route gets the layer, each with its own cost and requirements.
//!     .route("/v1/whoami", get(whoami).layer(auth.clone()))
//!     .route("/v1/render", post(|| async { "rendered" }).layer(auth.clone().cost(10)))
//!     .route(
//!         "/v1/docs",
//!         post(|| async { "written" }).layer(auth.clone().require(PermissionQuery::parse("docs:write")?)),
//!     );
//! // Serve with the peer address, so IP allowlists can be checked:
//! let _service = app.into_make_service_with_connect_info::<SocketAddr>();
//! # Ok(())
//! # }
//! ```

mod client_ip;
mod layer;
mod problem;

pub use client_ip::TrustedProxies;
pub use layer::{ApiKeyLayer, ApiKeyService, KeySource, ResponseFuture};
pub use problem::{DEFAULT_PROBLEM_TYPE_BASE, PROBLEM_JSON, RateLimitFields, rate_limit_headers};
