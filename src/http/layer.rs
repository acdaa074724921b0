//! [`ApiKeyLayer`] and its [`ApiKeyService`]: verify, then call the handler or answer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, OriginalUri};
use axum::http::header::{AUTHORIZATION, ORIGIN, REFERER};
use axum::http::{HeaderMap, HeaderName, Request};
use axum::response::Response;
use tower::{Layer, Service};

use super::client_ip::TrustedProxies;
use super::problem::{DEFAULT_PROBLEM_TYPE_BASE, Problems, RateFields, RateLimitFields};
use crate::decision::Decision;
use crate::policy::PermissionQuery;
use crate::store::{Store, VerifyRequest};
use crate::token::Env;

/// Where the layer looks for the key, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `Authorization: Bearer KEY` (the scheme matched case-insensitively).
    Bearer,
    /// The whole value of this header, e.g. `X-API-Key: KEY`.
    Header(HeaderName),
}

impl KeySource {
    /// `X-API-Key`.
    pub fn x_api_key() -> Self {
        KeySource::Header(HeaderName::from_static("x-api-key"))
    }

    /// The key in `headers`, if this source holds a non-empty one.
    pub fn find<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        // Bytes, not `HeaderValue::to_str`, which stops at the first byte that is not
        // visible ASCII; the same check over the key alone, without a branch per byte, is
        // open to vectorisation (callgrind: -25 instructions a request). A value with
        // other bytes holds no key, and the next source is tried.
        let key = match self {
            KeySource::Bearer => {
                let value = headers.get(AUTHORIZATION)?.as_bytes();
                let space = value.iter().position(|&b| b == b' ')?;
                let (scheme, key) = value.split_at(space);
                scheme.eq_ignore_ascii_case(b"bearer").then_some(key)?
            }
            KeySource::Header(name) => headers.get(name)?.as_bytes(),
        }
        .trim_ascii();
        let visible = key
            .iter()
            .fold(true, |all, &b| all & ((b == b'\t') | (b.wrapping_sub(0x20) < 0x5f)));
        std::str::from_utf8(key).ok().filter(|key| visible && !key.is_empty())
    }

    fn describe(&self) -> String {
        match self {
            KeySource::Bearer => "Authorization: Bearer <key>".to_string(),
            KeySource::Header(name) => format!("the {name} header"),
        }
    }
}

/// A tower [`Layer`] that verifies the API key of each request against a [`Store`] and
/// answers denials itself (see the [module docs](super)).
///
/// Cheap to clone. Settings of the whole API ([`key_sources`](Self::key_sources),
/// [`trusted_proxies`](Self::trusted_proxies), ...) are shared; settings of a route
/// ([`cost`](Self::cost), [`weight`](Self::weight), [`require`](Self::require)) belong to
/// the clone they are set on, so one layer serves every route:
/// `get(handler).layer(auth.clone().cost(5))`.
#[derive(Clone)]
pub struct ApiKeyLayer {
    config: Arc<LayerConfig>,
    route: RouteRule,
}

/// The settings of the whole API.
#[derive(Clone)]
struct LayerConfig {
    store: Arc<Store>,
    sources: Vec<KeySource>,
    proxies: TrustedProxies,
    project: Option<Box<str>>,
    env: Option<Env>,
    problem_base: Box<str>,
    problems: Problems,
    rate_fields: RateLimitFields,
}

/// The settings of one route.
#[derive(Clone, Debug)]
struct RouteRule {
    cost: u64,
    weight: u32,
    require: Option<Arc<PermissionQuery>>,
}

impl ApiKeyLayer {
    /// A layer verifying against `store`: the key from `Authorization: Bearer` or
    /// `X-API-Key`, no trusted proxy, cost 1, weight 1, no permission required.
    pub fn new(store: Arc<Store>) -> Self {
        let sources = vec![KeySource::Bearer, KeySource::x_api_key()];
        let problems = Problems::new(DEFAULT_PROBLEM_TYPE_BASE, &hint(&sources));
        ApiKeyLayer {
            config: Arc::new(LayerConfig {
                store,
                sources,
                proxies: TrustedProxies::none(),
                project: None,
                env: None,
                problem_base: DEFAULT_PROBLEM_TYPE_BASE.into(),
                problems,
                rate_fields: RateLimitFields::Both,
            }),
            route: RouteRule {
                cost: 1,
                weight: 1,
                require: None,
            },
        }
    }

    /// Where to look for the key, in order (the first source that holds one wins). An
    /// empty list keeps the default.
    pub fn key_sources(mut self, sources: impl IntoIterator<Item = KeySource>) -> Self {
        let sources: Vec<_> = sources.into_iter().collect();
        if !sources.is_empty() {
            let config = Arc::make_mut(&mut self.config);
            config.problems = Problems::new(&config.problem_base, &hint(&sources));
            config.sources = sources;
        }
        self
    }

    /// The proxies whose `X-Forwarded-For` is believed (default: none).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        Arc::make_mut(&mut self.config).proxies = proxies;
        self
    }

    /// Pins the project: keys of other projects are refused (403, `restriction: project`).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).project = Some(project.into().into_boxed_str());
        self
    }

    /// Pins the environment: keys of the other one are refused (403, `restriction: environment`).
    pub fn env(mut self, env: Env) -> Self {
        Arc::make_mut(&mut self.config).env = Some(env);
        self
    }

    /// The prefix of the problem documents' `type` (default
    /// [`DEFAULT_PROBLEM_TYPE_BASE`]), e.g. `https://docs.example.com/errors/`.
    pub fn problem_type_base(mut self, base: impl Into<String>) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.problem_base = base.into().into_boxed_str();
        config.problems = Problems::new(&config.problem_base, &hint(&config.sources));
        self
    }

    /// Which rate-limit fields answers of keys with rate limits carry (default
    /// [`RateLimitFields::Both`]). Each field costs the server a little on every such
    /// answer: one family is enough for clients that read only it.
    pub fn rate_limit_fields(mut self, fields: RateLimitFields) -> Self {
        Arc::make_mut(&mut self.config).rate_fields = fields;
        self
    }

    /// This route's budget cost (default 1; 0 only checks the budget).
    pub fn cost(mut self, cost: u64) -> Self {
        self.route.cost = cost;
        self
    }

    /// This route's rate-limit weight: how many requests one call counts as (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.route.weight = weight;
        self
    }

    /// The permissions this route requires, e.g. `docs:write` or `(a:read OR b:read)`.
    pub fn require(mut self, query: PermissionQuery) -> Self {
        self.route.require = Some(Arc::new(query));
        self
    }

    /// The store the layer verifies against.
    pub fn store(&self) -> &Arc<Store> {
        &self.config.store
    }

    /// The layer's answer to `decision` where no handler follows it: forward auth, where a
    /// gateway asks and the decision is the whole answer (`credstore serve`'s `/v1/auth`).
    ///
    /// `None` is a request without a key: the 401. A denial is answered exactly as the
    /// layer answers it (problem document, rate-limit fields, `Retry-After` on a 429, with
    /// this layer's [`require`](Self::require) named in an `INSUFFICIENT_PERMISSIONS`
    /// document); a valid key gets an empty 200 with its rate-limit fields.
    pub fn answer(&self, decision: Option<&Decision>) -> Response {
        let config = &*self.config;
        let Some(decision) = decision else {
            return config.problems.unauthorized();
        };
        let rate = config.rate_fields(decision);
        if !decision.is_valid() {
            return config.problems.denied(decision, self.route.require.as_deref(), rate);
        }
        let mut response = Response::default();
        if let Some(rate) = rate {
            rate.apply(response.headers_mut());
        }
        response
    }

    /// The layer's answer when the store could not be read (a verify returned an error):
    /// a 500 problem document.
    pub fn answer_unavailable(&self) -> Response {
        self.config.problems.unavailable()
    }
}

impl LayerConfig {
    /// The rate-limit fields an answer to `decision` carries, if any.
    #[inline]
    fn rate_fields(&self, decision: &Decision) -> Option<RateFields> {
        if decision.ratelimits.is_empty() {
            return None;
        }
        // `t` counts from the time the store decided at: no second clock read.
        let now_secs = u64::try_from(decision.at.div_euclid(1000)).unwrap_or(0);
        RateFields::of(decision, now_secs, self.rate_fields)
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            config: Arc::clone(&self.config),
            route: self.route.clone(),
        }
    }
}

impl std::fmt::Debug for ApiKeyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("sources", &self.config.sources)
            .field("proxies", &self.config.proxies)
            .field("project", &self.config.project)
            .field("env", &self.config.env)
            .field("rate_limit_fields", &self.config.rate_fields)
            .field("cost", &self.route.cost)
            .field("weight", &self.route.weight)
            .field("require", &self.route.require)
            .finish_non_exhaustive()
    }
}

/// The service [`ApiKeyLayer`] wraps around a route or router.
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    config: Arc<LayerConfig>,
    route: RouteRule,
}

impl<S> ApiKeyService<S> {
    /// Verifies the request. A valid key's decision goes into the request's extensions
    /// (built in place and moved once, into the extension's box) and the rate-limit fields
    /// its response gets are returned; any other outcome is answered here.
    fn check<B>(&self, req: &mut Request<B>) -> Checked {
        let config = &*self.config;
        let headers = req.headers();
        let Some(key) = config.sources.iter().find_map(|s| s.find(headers)) else {
            return Checked::Answer(config.problems.unauthorized());
        };
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| config.proxies.client_ip(peer.ip(), headers));
        let referrer = [REFERER, ORIGIN]
            .iter()
            .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        // Under `Router::nest` the URI is cut; an allowlist names the path as called.
        let path = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().path(), |OriginalUri(uri)| uri.path());
        let mut verify = VerifyRequest::new(key)
            .cost(self.route.cost)
            .weight(self.route.weight)
            .endpoint(req.method().as_str(), path);
        verify.ip = ip;
        verify.referrer = referrer;
        verify.require = self.route.require.as_deref();
        verify.project = config.project.as_deref();
        verify.env = config.env;
        let decision = match config.store.verify_with(&verify) {
            Ok(decision) => decision,
            Err(_) => return Checked::Answer(config.problems.unavailable()),
        };
        let rate = config.rate_fields(&decision);
        if decision.is_valid() {
            req.extensions_mut().insert(decision);
            Checked::Pass(rate)
        } else {
            Checked::Answer(config.problems.denied(&decision, self.route.require.as_deref(), rate))
        }
    }
}

impl<S, B> Service<Request<B>> for ApiKeyService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.check(&mut req) {
            // `poll_ready` readied `self.inner` and it is called here, before `call`
            // returns: no clone of the inner service is needed.
            Checked::Pass(rate) => ResponseFuture {
                state: State::Inner {
                    future: self.inner.call(req),
                    rate,
                },
            },
            Checked::Answer(answer) => ResponseFuture {
                state: State::Answered { answer: Some(answer) },
            },
        }
    }
}

/// What [`ApiKeyService::check`] found.
enum Checked {
    /// A valid key (its decision is in the request's extensions): the fields to add to
    /// the handler's response.
    Pass(Option<RateFields>),
    /// The layer's own answer.
    Answer(Response),
}

pin_project_lite::pin_project! {
    /// The future of [`ApiKeyService`]: the handler's response with the rate-limit fields
    /// added, or the layer's own answer.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F, rate: Option<RateFields> },
        Answered { answer: Option<Response> },
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, rate } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                if let Some(rate) = rate.take() {
                    rate.apply(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            // Polled again after completion: an empty answer rather than a panic.
            StateProj::Answered { answer } => Poll::Ready(Ok(answer.take().unwrap_or_default())),
        }
    }
}

/// Where the key goes, for the 401 detail: `send it as Authorization: Bearer <key> or ...`.
fn hint(sources: &[KeySource]) -> String {
    let parts: Vec<String> = sources.iter().map(KeySource::describe).collect();
    format!("send it as {}", parts.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    /// Headers; what `Bearer` finds; what `X-API-Key` finds.
    type Case = (
        &'static [(&'static str, &'static [u8])],
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn keys_are_found_where_the_sources_say() {
        let bearer = KeySource::Bearer;
        let x_api_key = KeySource::x_api_key();
        let cases: &[Case] = &[
            (&[("authorization", b"Bearer sk_live_a")], Some("sk_live_a"), None),
            (&[("authorization", b"bEaReR   sk_live_a \t")], Some("sk_live_a"), None),
            (&[("authorization", b"Basic sk_live_a")], None, None),
            (&[("authorization", b"Bearer")], None, None),
            (&[("authorization", b"Bearer   ")], None, None),
            (&[("authorization", b"Bearersk_live_a")], None, None),
            (&[("authorization", b"Bearer sk_\xff")], None, None),
            // Not visible ASCII (here UTF-8 for "é"): no key here, so the next source is tried.
            (
                &[
                    ("authorization", b"Bearer sk_live_\xc3\xa9"),
                    ("x-api-key", b"sk_test_b"),
                ],
                None,
                Some("sk_test_b"),
            ),
            (&[("x-api-key", b"sk_\xc2\xa0b")], None, None),
            (&[("x-api-key", b" sk_test_b ")], None, Some("sk_test_b")),
            (&[("x-api-key", b"")], None, None),
        ];
        for (pairs, by_bearer, by_header) in cases {
            let map = headers(pairs);
            assert_eq!(bearer.find(&map), *by_bearer, "{pairs:?}");
            assert_eq!(x_api_key.find(&map), *by_header, "{pairs:?}");
        }
    }
}
