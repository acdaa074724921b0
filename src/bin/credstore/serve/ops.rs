//! The sidecar's operations: `GET /healthz`, `GET /readyz`, `GET /metrics`, and the
//! request log.
//!
//! - `/healthz`: 200 while the process serves HTTP at all.
//! - `/readyz`: 200 while the store can verify: it is open (the sidecar holds it from start
//!   to stop) and, on a fleet host, not past its staleness bound ([`StoreStats::fleet_stale`],
//!   when every verify answers `Error::Stale`); else 503 `NOT_READY`.
//! - `/metrics`: the Prometheus text format (version 0.0.4), written by `prometheus-client`:
//!   requests by route and status, decisions by route and code, verify errors, the verify
//!   latency, and what the store reports ([`Store::stats`]): keys cached, live-map misses
//!   and hit rate, uses dropped, commit latency, fleet staleness and lag.
//! - The log: one line per request on stderr through `tracing`, human-readable (coloured
//!   on a terminal) or JSON Lines (`--log-format json`); `CREDSTORE_LOG` filters it
//!   (`info` by default; `debug` adds the hot-path routes). A line names the method, the
//!   path (scrubbed of secret-shaped tokens; no query string), the route, the status, the
//!   time taken, the decision's code and the peer: never a header, a body or a key.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use credstore::{Code, KeyId, LatencyHistogram, Store, StoreStats, redact};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The routes whose requests are logged at `debug`, not `info`: every use of a key goes
/// through them, at the rate the API is called.
const HOT_ROUTES: [&str; 3] = ["/v1/auth", "/v1/auth/{*path}", "/v1/keys.verify"];

/// Starts the request log on stderr: `format` is `human` or `json`; `CREDSTORE_LOG`, a list
/// of `target=level` directives or one level (default `info`), filters it. A malformed
/// `CREDSTORE_LOG` is reported and the default used.
pub fn init_logging(format: &str) {
    let directives = std::env::var("CREDSTORE_LOG").unwrap_or_default();
    let filter = match Targets::from_str(if directives.trim().is_empty() {
        "info"
    } else {
        &directives
    }) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "credstore serve: CREDSTORE_LOG {}: {e}; logging at info",
                redact::quote(&directives)
            );
            Targets::new().with_default(tracing::Level::INFO)
        }
    };
    let stderr = std::io::stderr;
    let installed = if format == "json" {
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(stderr);
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init()
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(stderr);
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init()
    };
    // Only a second initialisation fails, and the first one's log is the one wanted.
    drop(installed);
}

/// The operations' state: the metrics and the store they read.
pub struct Ops {
    store: Arc<Store>,
    metrics: Metrics,
}

impl Ops {
    pub fn new(store: Arc<Store>) -> Arc<Ops> {
        Arc::new(Ops {
            store,
            metrics: Metrics::new(),
        })
    }

    /// `GET /healthz`, `GET /readyz`, `GET /metrics`.
    pub fn routes<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> Router<S> {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(self))
    }

    /// Counts and logs every request: the outermost layer, so that it sees the answer the
    /// client gets (a timeout's included).
    pub fn observe(self: &Arc<Self>, router: Router) -> Router {
        router.layer(middleware::from_fn_with_state(Arc::clone(self), observe))
    }
}

/// What a handler that verified a key reports to the metrics, as a response extension.
#[derive(Debug, Clone, Copy)]
pub struct Decided {
    /// The decision's code; `None` when the verify failed (the store could not be read, a
    /// stale fleet host).
    pub code: Option<Code>,
    /// How long the verify took.
    pub took: Duration,
}

impl Decided {
    /// Verifies with `verify`, timing it.
    pub fn measure<T>(
        verify: impl FnOnce() -> credstore::Result<T>,
        code: impl Fn(&T) -> Code,
    ) -> (credstore::Result<T>, Decided) {
        let started = Instant::now();
        let result = verify();
        let decided = Decided {
            code: result.as_ref().ok().map(code),
            took: started.elapsed(),
        };
        (result, decided)
    }
}

/// The sidecar's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    verify_errors: Family<RouteLabel, Counter>,
    verify_seconds: Histogram,
    cached_keys: Gauge,
    cache_misses: Counter,
    cache_hit_ratio: Gauge<f64, AtomicU64>,
    /// Verifies the sidecar made (with the store's misses, the hit rate).
    verifies: AtomicU64,
    uses_dropped: Counter,
    commit_seconds: StoreHistogram,
    fleet_stale: Gauge,
    fleet_lag_seconds: Gauge<f64, AtomicU64>,
}

/// A histogram the store keeps ([`LatencyHistogram`]), shown as it was last read.
#[derive(Debug, Clone, Default)]
struct StoreHistogram(Arc<Mutex<Option<LatencyHistogram>>>);

impl StoreHistogram {
    fn set(&self, h: LatencyHistogram) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(h);
        }
    }
}

impl EncodeMetric for StoreHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let slot = self.0.lock().map_err(|_| std::fmt::Error)?;
        let (sum, count, buckets) = match &*slot {
            Some(h) => (h.sum_secs, h.count, h.buckets.as_slice()),
            None => (0.0, 0, &[][..]),
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("credstore");
        let requests = Family::<RequestLabels, Counter>::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let verify_errors = Family::<RouteLabel, Counter>::default();
        // 1 µs to about 0.5 s: a cached verify is under a microsecond, a miss reads sled, a
        // budget mark waits for an fsync.
        let verify_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 10));
        let cached_keys = Gauge::default();
        let cache_misses = Counter::default();
        let cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        let uses_dropped = Counter::default();
        let commit_seconds = StoreHistogram::default();
        let fleet_stale = Gauge::default();
        let fleet_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route (the route's pattern; \"unmatched\" for none) and status",
            requests.clone(),
        );
        registry.register(
            "decisions",
            "Verify decisions, by route and code (VALID, NOT_FOUND, RATE_LIMITED, ...)",
            decisions.clone(),
        );
        registry.register(
            "verify_errors",
            "Verifies that returned an error instead of a decision (store unreadable, stale fleet host), by route",
            verify_errors.clone(),
        );
        registry.register(
            "verify_duration_seconds",
            "Time one verify took in the sidecar's handlers",
            verify_seconds.clone(),
        );
        registry.register(
            "cached_keys",
            "Keys whose live state is held in memory",
            cached_keys.clone(),
        );
        registry.register(
            "cache_misses",
            "Verifies whose key was not in the live map (cold or unknown keys), since the store opened",
            cache_misses.clone(),
        );
        registry.register(
            "cache_hit_ratio",
            "Share of the sidecar's verifies answered from the live map (1 until the first verify)",
            cache_hit_ratio.clone(),
        );
        registry.register(
            "use_log_dropped",
            "Uses that could not be recorded because the hand-off queue was full (each batch also logged as use.dropped)",
            uses_dropped.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time a commit took: log append, fsync, index update (on a fleet host also the append to PostgreSQL)",
            commit_seconds.clone(),
        );
        registry.register(
            "fleet_lag_seconds",
            "A fleet host: time since it was last in step with the fleet (0 for a local store)",
            fleet_lag_seconds.clone(),
        );
        registry.register(
            "fleet_stale",
            "1 while a fleet host is past its staleness bound and refuses to verify, else 0",
            fleet_stale.clone(),
        );
        Metrics {
            registry,
            requests,
            decisions,
            verify_errors,
            verify_seconds,
            cached_keys,
            cache_misses,
            cache_hit_ratio,
            verifies: AtomicU64::new(0),
            uses_dropped,
            commit_seconds,
            fleet_stale,
            fleet_lag_seconds,
        }
    }

    /// Counts one answered request, and the decision it carried.
    fn record(&self, route: &str, status: StatusCode, decided: Option<Decided>) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status: status.as_u16(),
            })
            .inc();
        let Some(decided) = decided else {
            return;
        };
        self.verify_seconds.observe(decided.took.as_secs_f64());
        self.verifies.fetch_add(1, Ordering::Relaxed);
        match decided.code {
            Some(code) => self
                .decisions
                .get_or_create(&DecisionLabels {
                    route: route.to_string(),
                    code: code.as_str(),
                })
                .inc(),
            None => self
                .verify_errors
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .inc(),
        };
    }

    /// Sets the gauges of what the store reports.
    fn read_store(&self, stats: StoreStats) {
        self.cached_keys
            .set(i64::try_from(stats.cached_keys).unwrap_or(i64::MAX));
        self.fleet_stale.set(i64::from(stats.fleet_stale));
        // Counters the store keeps since it opened, which is when the sidecar started.
        self.cache_misses.inner().store(stats.cache_misses, Ordering::Relaxed);
        self.uses_dropped.inner().store(stats.uses_dropped, Ordering::Relaxed);
        let verifies = self.verifies.load(Ordering::Relaxed);
        #[expect(clippy::cast_precision_loss, reason = "a ratio of two counts")]
        let ratio = if verifies == 0 {
            1.0
        } else {
            1.0 - (stats.cache_misses.min(verifies) as f64 / verifies as f64)
        };
        self.cache_hit_ratio.set(ratio);
        self.commit_seconds.set(stats.commit_latency);
        self.fleet_lag_seconds
            .set(stats.fleet_lag.map_or(0.0, |lag| lag.as_secs_f64()));
    }

    /// The text format.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /healthz`: 200 while the sidecar serves.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive: {\"success\": true, \"data\": {\"status\": \"alive\"}}")))]
pub(super) async fn healthz() -> Response {
    envelope(
        StatusCode::OK,
        json!({ "success": true, "data": { "status": "alive" } }),
    )
}

/// `GET /readyz`: 200 while the store can verify; 503 on a fleet host past its staleness
/// bound.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: the store can verify"),
        (status = 503, description = "NOT_READY: a fleet host past its staleness bound"),
    ))]
pub(super) async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let stats = ops.store.stats();
    if stats.fleet_stale {
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "success": false,
                "error": {
                    "code": "NOT_READY",
                    "message": "this fleet host has not reached its fleet within its staleness bound: it refuses to verify",
                },
            }),
        );
    }
    envelope(
        StatusCode::OK,
        json!({ "success": true, "data": { "status": "ready", "fleet_stale": false } }),
    )
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub(super) async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    ops.metrics.read_store(ops.store.stats());
    match ops.metrics.encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => envelope(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "success": false,
                "error": { "code": "INTERNAL_ERROR", "message": "the metrics could not be written" },
            }),
        ),
    }
}

/// A JSON answer in the sidecar's envelope, never cached.
fn envelope(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Counts the request and logs one line for it.
async fn observe(State(ops): State<Arc<Ops>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let path = loggable_path(request.uri().path());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    let status = response.status();
    let decided = response.extensions().get::<Decided>().copied();
    ops.metrics.record(&route, status, decided);
    let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let code = decided.map(|d| d.code.map_or("ERROR", Code::as_str));
    let status = status.as_u16();
    if HOT_ROUTES.contains(&route.as_str()) {
        tracing::debug!(%method, path, route, status, took_us, code, peer, "request");
    } else {
        tracing::info!(%method, path, route, status, took_us, code, peer, "request");
    }
    response
}

/// A request's path for the log: a path can hold anything a client typed, a key
/// included, so each segment is scrubbed of secret-shaped tokens, except key ids (public,
/// and what an operator looks for).
fn loggable_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if KeyId::parse(segment).is_ok() {
                segment.into()
            } else {
                redact::scrub(segment)
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_keep_key_ids_and_lose_keys() {
        let id = "key_0358IHIpUTZNwkxp9IzYZU";
        assert_eq!(
            loggable_path(&format!("/v1/api-keys/{id}/rotate")),
            format!("/v1/api-keys/{id}/rotate")
        );
        let logged = loggable_path("/v1/api-keys/sk_live_XQMzAPIvGNXyobmWrzDzvTK7JBLgzlJK4V6CNP");
        assert!(logged.starts_with("/v1/api-keys/sk_live_XQMz"), "{logged}");
        assert!(!logged.contains("XQMzAPIvGNXyobmWrzDzvTK7"), "{logged}");
    }

    #[test]
    fn counters_move_with_what_is_recorded() {
        let metrics = Metrics::new();
        let valid = Decided {
            code: Some(Code::Valid),
            took: Duration::from_micros(3),
        };
        metrics.record("/v1/auth", StatusCode::OK, Some(valid));
        metrics.record("/v1/auth", StatusCode::OK, Some(valid));
        metrics.record(
            "/v1/auth",
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(Decided {
                code: None,
                took: Duration::ZERO,
            }),
        );
        metrics.record("/healthz", StatusCode::OK, None);
        let text = metrics.encode().unwrap_or_default();
        for line in [
            r#"credstore_decisions_total{route="/v1/auth",code="VALID"} 2"#,
            r#"credstore_verify_errors_total{route="/v1/auth"} 1"#,
            r#"credstore_http_requests_total{route="/healthz",status="200"} 1"#,
            r#"credstore_verify_duration_seconds_count 3"#,
            "credstore_cached_keys 0",
            "credstore_fleet_stale 0",
            "credstore_commit_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
