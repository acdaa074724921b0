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
//! Without a key, or with a wrong or revoked one: 401. Past the rate limit: 429 with
//! `Retry-After`. `--no-auth` serves the same routes without the layer: the baseline of the
//! load figures in `docs/PERFORMANCE.md` (with `--fixed-rate-fields`, also five rate-limit
//! fields of fixed values on every answer: what sending them costs without credstore).

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json, Router};
use clap::Parser;
use credstore::http::{ApiKeyLayer, RateLimitFields, TrustedProxies};
use credstore::policy::{PermissionQuery, PermissionSet, RoleName};
use credstore::{Budget, Config, Decision, InputError, NewKey, Period, RateLimit, Store, UseLog};
use serde_json::{Value, json};

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
    let protect = |route: MethodRouter, layer: Option<ApiKeyLayer>| match layer {
        Some(layer) => route.layer(layer),
        None => route,
    };
    Ok(Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/hello", protect(get(hello), auth.cloned()))
        .route("/v1/ping", protect(get(|| async { "pong\n" }), auth.cloned()))
        .route(
            "/v1/docs",
            protect(post(write_doc), auth.map(|a| a.clone().require(docs_query))),
        )
        .route(
            "/v1/render",
            protect(post(render), auth.map(|a| a.clone().cost(RENDER_COST))),
        ))
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

/// Opens the store in `data`, or creates it with two demo keys and prints them once.
fn open_or_init(data: &Path, use_log: UseLog) -> Result<Store, Box<dyn Error>> {
    let config = Config::from_env()?.use_log(use_log);
    if data.join("STORE").exists() {
        return Ok(Store::open(data, config)?);
    }
    let store = Store::init(data, config)?;
    let demo = NewKey::new("demo")
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
    } else {
        let store = Arc::new(open_or_init(&args.data, args.use_log)?);
        let auth = ApiKeyLayer::new(Arc::clone(&store))
            .trusted_proxies(TrustedProxies::new(&args.trusted_proxies)?)
            .rate_limit_fields(args.rate_limit_fields);
        (app(Some(&auth))?, Some(store))
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("Listening on http://{}", listener.local_addr()?);
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
