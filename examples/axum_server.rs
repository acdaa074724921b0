//! A small API protected by credstore's layer.
//!
//! ```sh
//! cargo run --release --example axum_server --features http -- --data ./example-data
//! ```
//!
//! The first run creates the store and prints two keys, once: `demo` (role member, 60
//! requests a minute, a budget of 100 a month) and `demo writer` (also `docs:write`). Then:
//!
//! ```sh
//! curl -i localhost:3000/health                                            # open: 200
//! curl -i -H "Authorization: Bearer $KEY" localhost:3000/v1/hello          # any valid key: 200, greets it by name
//! curl -i -H "Authorization: Bearer $KEY" localhost:3000/v1/ping           # any valid key: 200 "pong"
//! curl -i -X POST -H "X-API-Key: $KEY" localhost:3000/v1/docs              # needs docs:write: 200, else 403
//! curl -i -X POST -H "Authorization: Bearer $KEY" localhost:3000/v1/render # costs 10: 402 once the budget is spent
//! ```
//!
//! The customers' dashboard is mounted at `/dashboard` (`credstore::dashboard::router`):
//! the demo keys belong to owner `acme`, and the server prints a single-use link for it at
//! start (valid 15 minutes).
//!
//! Without a key, or with a wrong or revoked one: 401. Past the rate limit: 429 with
//! `Retry-After`. `--no-auth` serves the same routes without the layer: the baseline of the
//! load figures in `docs/PERFORMANCE.md` (with `--fixed-rate-fields`, also five rate-limit
//! fields of fixed values on every answer: what sending them costs without credstore).
//! `--governor` serves them behind tower_governor's `GovernorLayer` instead (no store: rate
//! limits and their `x-ratelimit-*` fields only, no key checked), the peer those figures
//! compare the layer with.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use clap::{Parser, ValueEnum};
use credstore::http::{ApiKeyLayer, RateLimitFields, TrustedProxies};
use credstore::policy::{PermissionQuery, PermissionSet, RoleName};
use credstore::{Budget, Config, Decision, InputError, NewKey, Period, RateLimit, Store, UseLog};
use governor::middleware::StateInformationMiddleware;
use serde_json::{Value, json};
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::{KeyExtractor, PeerIpKeyExtractor};
use tower_governor::{GovernorError, GovernorLayer};

/// What `POST /v1/render` costs, in budget units.
pub const RENDER_COST: u64 = 10;
/// What `POST /v1/docs` requires.
pub const DOCS_PERMISSION: &str = "docs:write";

/// A small API protected by credstore's layer.
#[derive(Parser)]
struct Args {
    /// The store (created, with two demo keys, when missing).
    #[arg(long, default_value = "./example-data")]
    data: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// A proxy (address or CIDR) whose X-Forwarded-For is believed (repeatable).
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// Serve the same routes without the layer (no store is opened).
    #[arg(long)]
    no_auth: bool,
    /// With `--no-auth`: set five rate-limit fields of fixed values on every answer, as
    /// many as the layer sets for a key with a rate limit. What sending the fields costs
    /// without credstore: a baseline of the load figures in `docs/PERFORMANCE.md`.
    #[arg(long, requires = "no_auth")]
    fixed_rate_fields: bool,
    /// Serve the same routes behind tower_governor's `GovernorLayer` instead (no store is
    /// opened): a rate limit of 10^9 a second (burst 10^9, so nothing is refused) and its
    /// `x-ratelimit-limit` and `x-ratelimit-remaining` fields. The peer of the load figures
    /// in `docs/PERFORMANCE.md`.
    #[arg(long, conflicts_with = "no_auth")]
    governor: bool,
    /// With `--governor`: what requests are counted by, the `Authorization` header's whole
    /// value (one limit per key, as credstore's) or the peer's address (tower_governor's
    /// default).
    #[arg(long, value_enum, default_value = "authorization", requires = "governor")]
    governor_key: GovernorKey,
    /// Async worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Which rate-limit fields answers carry: both (X-RateLimit-* and the draft
    /// RateLimit, RateLimit-Policy), x-ratelimit, draft or off.
    #[arg(long, default_value = "both", value_parser = parse_rate_limit_fields)]
    rate_limit_fields: RateLimitFields,
    /// How verifications are logged: every (one event per request), summary or off.
    #[arg(long, default_value = "every", value_parser = parse_use_log)]
    use_log: UseLog,
}

/// What `--governor` counts requests by.
#[derive(Clone, Copy, ValueEnum)]
enum GovernorKey {
    /// The `Authorization` header's whole value ([`AuthorizationKey`]).
    Authorization,
    /// The peer's address (tower_governor's `PeerIpKeyExtractor`).
    PeerIp,
}

fn parse_rate_limit_fields(text: &str) -> Result<RateLimitFields, String> {
    match text {
        "both" => Ok(RateLimitFields::Both),
        "x-ratelimit" => Ok(RateLimitFields::XRateLimit),
        "draft" => Ok(RateLimitFields::Draft),
        "off" => Ok(RateLimitFields::Off),
        _ => Err(format!("{text:?}: use both, x-ratelimit, draft or off")),
    }
}

fn parse_use_log(text: &str) -> Result<UseLog, String> {
    match text {
        "every" => Ok(UseLog::Every),
        "summary" => Ok(UseLog::Summary),
        "off" => Ok(UseLog::Off),
        _ => Err(format!("{text:?}: use every, summary or off")),
    }
}

/// The API: `/health` open; `/v1/hello`, `/v1/ping` (a handler that ignores the decision),
/// `/v1/docs` (requires `docs:write`) and `/v1/render` (costs [`RENDER_COST`]) behind
/// `auth`, or open when `auth` is `None`.
///
/// # Errors
/// Never for the permission this example requires; a bad query would be refused here.
pub fn app(auth: Option<&ApiKeyLayer>) -> Result<Router, InputError> {
    let docs_query = PermissionQuery::parse(DOCS_PERMISSION)?;
    Ok(routes(|route, guard| match (auth, guard) {
        (None, _) => route,
        (Some(auth), Guard::Any) => route.layer(auth.clone()),
        (Some(auth), Guard::Docs) => route.layer(auth.clone().require(docs_query.clone())),
        (Some(auth), Guard::Render) => route.layer(auth.clone().cost(RENDER_COST)),
    }))
}

/// The same API with every route but `/health` behind tower_governor's `GovernorLayer`
/// configured by `config` (one limiter shared by the routes; no key is checked).
pub fn governed_app<K>(config: GovernorConfig<K, StateInformationMiddleware>) -> Router
where
    K: KeyExtractor + Send + Sync + 'static,
    K::Key: Send + Sync + 'static,
{
    let layer = GovernorLayer::new(config);
    routes(|route, _| route.layer(layer.clone()))
}

/// tower_governor's quota for the load runs: 10^9 requests a second (one per nanosecond),
/// a burst of 10^9, with its rate-limit fields: nothing is refused, as with the limited
/// key of the credstore runs (`--rate-limit 1000000000/1s`).
pub fn governor_config<K: KeyExtractor>(key: K) -> Option<GovernorConfig<K, StateInformationMiddleware>> {
    GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .key_extractor(key)
        .use_headers()
        .finish()
}

/// A key extractor for tower_governor: the `Authorization` header's whole value, so that
/// requests are counted per API key, as credstore's layer counts them (without checking
/// the key). The value itself is the key (a reference-counted slice of the request's
/// bytes: no copy), the cheapest key a header can give.
#[derive(Clone, Copy, Debug)]
pub struct AuthorizationKey;

impl KeyExtractor for AuthorizationKey {
    type Key = HeaderValue;

    fn extract<T>(&self, req: &Request<T>) -> Result<HeaderValue, GovernorError> {
        req.headers()
            .get(AUTHORIZATION)
            .cloned()
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// Which layer a route gets, in [`routes`].
enum Guard {
    /// Any valid key.
    Any,
    /// A key with [`DOCS_PERMISSION`].
    Docs,
    /// A key, charged [`RENDER_COST`].
    Render,
}

/// The routes, each but `/health` passed through `protect` with what it asks of its layer.
fn routes(protect: impl Fn(MethodRouter, Guard) -> MethodRouter) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/hello", protect(get(hello), Guard::Any))
        .route("/v1/ping", protect(get(|| async { "pong\n" }), Guard::Any))
        .route("/v1/docs", protect(post(write_doc), Guard::Docs))
        .route("/v1/render", protect(post(render), Guard::Render))
}

/// Greets the key by name: the layer hands the handler its decision.
async fn hello(decision: Option<Extension<Decision>>) -> String {
    match decision.as_ref().and_then(|Extension(d)| d.key.as_deref()) {
        Some(key) => format!("hello, {}\n", key.name),
        None => "hello\n".to_string(),
    }
}

async fn write_doc(decision: Option<Extension<Decision>>) -> Json<Value> {
    let by = decision.and_then(|Extension(d)| d.key.map(|k| k.id.to_string()));
    Json(json!({ "written": true, "by": by }))
}

async fn render(decision: Option<Extension<Decision>>) -> Json<Value> {
    let remaining = decision.and_then(|Extension(d)| d.budget.map(|b| b.remaining));
    Json(json!({ "rendered": true, "budget_remaining": remaining }))
}

/// Five rate-limit fields of fixed values (as long as the layer's for a key with a limit
/// of 10^9 a second), set the way the layer sets them.
pub fn fixed_rate_fields(mut response: Response) -> Response {
    const FIELDS: [(HeaderName, &str); 5] = [
        (HeaderName::from_static("x-ratelimit-limit"), "1000000000"),
        (HeaderName::from_static("x-ratelimit-remaining"), "999999999"),
        (HeaderName::from_static("x-ratelimit-reset"), "1763840000"),
        (
            HeaderName::from_static("ratelimit-policy"),
            "\"bench\";q=1000000000;w=1",
        ),
        (HeaderName::from_static("ratelimit"), "\"bench\";r=999999999;t=1"),
    ];
    let headers = response.headers_mut();
    headers.reserve(6);
    for (name, value) in FIELDS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The owner the demo keys belong to, whose dashboard link the server prints at start.
const DEMO_OWNER: &str = "acme";

/// Opens the store in `data`, or creates it with two demo keys and prints them once.
fn open_or_init(data: &Path, use_log: UseLog) -> Result<Store, Box<dyn Error>> {
    let config = Config::from_env()?.use_log(use_log);
    if data.join("STORE").exists() {
        return Ok(Store::open(data, config)?);
    }
    let store = Store::init(data, config)?;
    store.set_owner(DEMO_OWNER, credstore::OwnerUpdate::default())?;
    let demo = NewKey::new("demo")
        .owner(DEMO_OWNER)
        .role(RoleName::parse("member")?)
        .rate_limit(RateLimit::parse("60/1m:minute")?)
        .budget(Budget::new(100, Period::Monthly { anchor_day: 1 })?);
    let writer = NewKey::new("demo writer")
        .role(RoleName::parse("member")?)
        .permissions(PermissionSet::parse([DOCS_PERMISSION])?);
    for new in [demo, writer] {
        let created = store.create(new)?;
        println!("{:<12} {}", created.record.name, created.key.expose());
    }
    println!("(shown once)");
    Ok(store)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn Error>> {
    let (router, store) = if args.no_auth {
        let router = app(None)?;
        let router = if args.fixed_rate_fields {
            router.layer(tower::util::MapResponseLayer::new(fixed_rate_fields))
        } else {
            router
        };
        (router, None)
    } else if args.governor {
        let router = match args.governor_key {
            GovernorKey::Authorization => governor_config(AuthorizationKey).map(governed_app),
            GovernorKey::PeerIp => governor_config(PeerIpKeyExtractor).map(governed_app),
        };
        (router.ok_or("tower_governor refused the quota")?, None)
    } else {
        let store = Arc::new(open_or_init(&args.data, args.use_log)?);
        let auth = ApiKeyLayer::new(Arc::clone(&store))
            .trusted_proxies(TrustedProxies::new(&args.trusted_proxies)?)
            .rate_limit_fields(args.rate_limit_fields);
        // The customers' dashboard, mounted beside the API: owners manage their own keys.
        let dashboard = credstore::dashboard::router(
            Arc::clone(&store),
            credstore::dashboard::DashboardConfig {
                host_name: "Example API".into(),
                ..credstore::dashboard::DashboardConfig::default()
            },
        );
        (app(Some(&auth))?.nest("/dashboard", dashboard), Some(store))
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    println!("Listening on http://{addr}");
    // A link for the demo owner, to try the dashboard with (it works once, for 15 minutes).
    if let Some(store) = &store
        && store.owner(DEMO_OWNER).is_ok()
    {
        let link = store.mint_dashboard_link(&credstore::dashboard::LinkRequest::new(DEMO_OWNER))?;
        println!(
            "Dashboard for {DEMO_OWNER}: {}",
            link.url(&format!("http://{addr}/dashboard"))
        );
    }
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The router, and the layers' handles on the store, are gone: close it (flushes counters).
    if let Some(store) = store.and_then(Arc::into_inner) {
        store.close()?;
    }
    Ok(())
}
