//! Forward auth: `GET|POST /v1/auth` for nginx `auth_request` and Traefik `ForwardAuth`,
//! and `ANY /v1/auth/{*path}` for Envoy `ext_authz` in HTTP mode (`path_prefix: /v1/auth`).
//!
//! A gateway asks before it passes a request upstream; the answer is the decision:
//!
//! - the key: the forwarded request's `Authorization: Bearer` or `X-API-Key`;
//! - the client's address: when the peer (the gateway) is a trusted proxy
//!   (`--trusted-proxy`, default loopback), `X-Forwarded-For` read from the right
//!   ([`TrustedProxies::client_ip`]), else `X-Real-IP`, else the peer; from any other peer,
//!   the peer, whatever the headers say;
//! - the endpoint: `X-Original-Method` and `X-Original-URI` (nginx), else
//!   `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik); under `/v1/auth/{*path}` the
//!   request's own method and the path after `/v1/auth` (Envoy). The query string is not
//!   part of it. Without one, the endpoint is unknown, which a key with an endpoint
//!   allowlist is refused for;
//! - the referrer: `Referer`, else `Origin`; the cost: `X-Credstore-Cost` (default 1).
//!
//! The answer is [`ApiKeyLayer::answer`]: the decision's own status (200, 401, 402, 403,
//! 429) with the rate-limit fields, `Retry-After` on a 429 and a problem document on a
//! denial; a 200 also names the key for the upstream (`X-Credstore-Key-Id`,
//! `X-Credstore-Project`, `X-Credstore-Env`). A request that asks with
//! `X-Credstore-Problem-Header: 1` gets the problem document of a denial in the
//! `X-Credstore-Problem` header as well: nginx passes no body of an auth answer on, but
//! can put a header's value into the answer it makes itself (`examples/nginx/`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{ORIGIN, REFERER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::{any, get};
use credstore::http::{ApiKeyLayer, KeySource, PROBLEM_JSON, TrustedProxies};
use credstore::{Decision, Store, VerifyRequest, redact};

use super::ops::Decided;
use crate::Failure;

const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_CREDSTORE_COST: HeaderName = HeaderName::from_static("x-credstore-cost");
const X_CREDSTORE_PROBLEM_HEADER: HeaderName = HeaderName::from_static("x-credstore-problem-header");
const X_CREDSTORE_PROBLEM: HeaderName = HeaderName::from_static("x-credstore-problem");
const X_CREDSTORE_KEY_ID: HeaderName = HeaderName::from_static("x-credstore-key-id");
const X_CREDSTORE_PROJECT: HeaderName = HeaderName::from_static("x-credstore-project");
const X_CREDSTORE_ENV: HeaderName = HeaderName::from_static("x-credstore-env");

/// The longest problem document copied into `X-Credstore-Problem` (nginx's default buffer
/// for an upstream's header is 4 KiB; a document is a few hundred bytes).
const MAX_PROBLEM_HEADER: usize = 2048;

/// The proxies trusted by default: loopback, where a gateway beside the sidecar connects
/// from. Anything that can connect from there can call `/v1/keys.verify` with any address
/// anyway.
const DEFAULT_TRUSTED: [&str; 2] = ["127.0.0.0/8", "::1"];

/// Forward auth's settings and what it answers with.
pub struct Gate {
    layer: ApiKeyLayer,
    proxies: TrustedProxies,
}

impl Gate {
    /// `trusted` as `--trusted-proxy` gives it: addresses and CIDR ranges, `none` for no
    /// proxy at all, nothing for [`DEFAULT_TRUSTED`].
    pub fn new(store: Arc<Store>, trusted: &[String]) -> Result<Arc<Gate>, Failure> {
        let proxies = if trusted.is_empty() {
            TrustedProxies::new(DEFAULT_TRUSTED)
        } else if trusted.iter().all(|t| t.eq_ignore_ascii_case("none")) {
            Ok(TrustedProxies::none())
        } else {
            TrustedProxies::new(trusted)
        }
        .map_err(|e| crate::usage(format!("--trusted-proxy: {e}")))?;
        Ok(Arc::new(Gate {
            layer: ApiKeyLayer::new(store),
            proxies,
        }))
    }

    /// The proxies whose word on the client's address is taken (`--trusted-proxy`).
    pub fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    /// `GET|POST /v1/auth`, `ANY /v1/auth/{*path}`.
    pub fn routes<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> Router<S> {
        Router::new()
            .route("/v1/auth", get(forward_auth).post(forward_auth))
            .route("/v1/auth/{*path}", any(forward_auth))
            .with_state(Arc::clone(self))
    }
}

/// The handler of both routes: `GET|POST /v1/auth` (nginx `auth_request`, Traefik
/// `ForwardAuth`) and `ANY /v1/auth/{*path}` ([`forward_auth_under_prefix`]).
#[utoipa::path(method(get, post), path = "/v1/auth", tag = "gateways",
    params(
        ("Authorization" = Option<String>, Header, description = "Bearer KEY, forwarded by the gateway"),
        ("X-API-Key" = Option<String>, Header, description = "the key, forwarded by the gateway"),
        ("X-Original-Method" = Option<String>, Header, description = "the request's method (nginx); X-Forwarded-Method (Traefik)"),
        ("X-Original-URI" = Option<String>, Header, description = "the request's path (nginx); X-Forwarded-Uri (Traefik)"),
        ("X-Credstore-Cost" = Option<u64>, Header, description = "the budget cost (default 1)"),
    ),
    responses(
        (status = 200, description = "Valid: X-Credstore-Key-Id, X-Credstore-Project, X-Credstore-Env and the rate-limit fields for the upstream"),
        (status = 401, description = "No key, or one that is not valid (problem+json)"),
        (status = 402, description = "Budget exhausted (problem+json)"),
        (status = 403, description = "Not allowed here: project, environment, address, referrer, endpoint or permission (problem+json)"),
        (status = 429, description = "Rate limited, with Retry-After (problem+json)"),
    ))]
pub(super) async fn forward_auth(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let headers = &parts.headers;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let mut response = match decide(&gate, &parts.method, parts.uri.path(), headers, peer) {
        Ok(Answer { mut response, decided }) => {
            if let Some(decided) = decided {
                response.extensions_mut().insert(decided);
            }
            response
        }
        Err(bad) => bad_request(&bad),
    };
    if wants_problem_header(headers) && response.status() != StatusCode::OK {
        response = copy_problem_into_header(response).await;
    }
    response
}

/// An answer, and the decision behind it for the metrics.
struct Answer {
    response: Response,
    decided: Option<Decided>,
}

/// Verifies the forwarded request; `Err` for a header forward auth cannot read (the
/// message says which).
fn decide(
    gate: &Gate,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Answer, String> {
    let sources = [KeySource::Bearer, KeySource::x_api_key()];
    let Some(key) = sources.iter().find_map(|s| s.find(headers)) else {
        return Ok(Answer {
            response: gate.layer.answer(None),
            decided: None,
        });
    };
    let cost = match headers.get(&X_CREDSTORE_COST) {
        None => 1,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or("X-Credstore-Cost takes a whole number of cost units, e.g. 1")?,
    };
    let endpoint = endpoint(method, path, headers)?;
    let mut verify = VerifyRequest::new(key).cost(cost);
    verify.ip = peer.map(|peer| client_ip(&gate.proxies, peer, headers));
    verify.endpoint = endpoint.as_ref().map(|(m, p)| (m.as_str(), p.as_str()));
    verify.referrer = [REFERER, ORIGIN]
        .iter()
        .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    // Inline, as the layer does: a verify of a cached key is sub-microsecond.
    let (verified, decided) = Decided::measure(|| gate.layer.store().verify_with(&verify), |d: &Decision| d.code);
    let response = match verified {
        Ok(decision) => {
            let mut response = gate.layer.answer(Some(&decision));
            if decision.is_valid() {
                name_the_key(&decision, response.headers_mut());
            }
            response
        }
        Err(_) => gate.layer.answer_unavailable(),
    };
    Ok(Answer {
        response,
        decided: Some(decided),
    })
}

/// The client's address: see the module docs.
fn client_ip(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if !proxies.contains(peer) {
        return peer;
    }
    if headers.contains_key(X_FORWARDED_FOR) {
        return proxies.client_ip(peer, headers);
    }
    headers
        .get(X_REAL_IP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| ip.to_canonical())
}

/// The method and path the client called; `None` when the gateway did not say.
fn endpoint(method: &Method, path: &str, headers: &HeaderMap) -> Result<Option<(String, String)>, String> {
    // Envoy: the check request is the original one, under the path prefix.
    if let Some(rest) = path.strip_prefix("/v1/auth/") {
        return Ok(Some((method.as_str().to_string(), format!("/{rest}"))));
    }
    let pairs = [
        (X_ORIGINAL_METHOD, "X-Original-Method", X_ORIGINAL_URI, "X-Original-URI"),
        (
            X_FORWARDED_METHOD,
            "X-Forwarded-Method",
            X_FORWARDED_URI,
            "X-Forwarded-Uri",
        ),
    ];
    for (method_header, method_title, uri_header, uri_title) in pairs {
        let (Some(method), Some(uri)) = (headers.get(method_header), headers.get(uri_header)) else {
            continue;
        };
        let method = method
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()))
            .ok_or_else(|| format!("{method_title} is not an HTTP method"))?;
        let path = uri_path(uri).ok_or_else(|| format!("{uri_title} holds no path"))?;
        return Ok(Some((method.to_ascii_uppercase(), path)));
    }
    Ok(None)
}

/// The path of a forwarded URI: origin form (`/a/b?q`, nginx's `$request_uri`, Traefik's
/// `X-Forwarded-Uri`) or absolute form (`https://host/a/b?q`), without its query.
fn uri_path(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let path = if text.starts_with('/') {
        text.split(['?', '#']).next()?
    } else {
        let uri: axum::http::Uri = text.parse().ok()?;
        uri.scheme()?;
        return Some(uri.path().to_string());
    };
    Some(path.to_string())
}

/// `X-Credstore-Key-Id`, `X-Credstore-Project`, `X-Credstore-Env` of a valid key.
fn name_the_key(decision: &Decision, headers: &mut HeaderMap) {
    let Some(key) = &decision.key else {
        return;
    };
    let values = [
        (X_CREDSTORE_KEY_ID, key.id.as_str()),
        (X_CREDSTORE_PROJECT, key.project.as_str()),
        (X_CREDSTORE_ENV, key.env().as_str()),
    ];
    for (name, value) in values {
        // Ids, project names and environments are printable ASCII; one that is not is left out.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn wants_problem_header(headers: &HeaderMap) -> bool {
    headers
        .get(X_CREDSTORE_PROBLEM_HEADER)
        .is_some_and(|v| matches!(v.as_bytes(), b"1" | b"true" | b"on"))
}

/// The answer with its problem document (a small body, in memory) copied into
/// `X-Credstore-Problem`.
async fn copy_problem_into_header(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_PROBLEM_HEADER).await.unwrap_or_default();
    if let Ok(value) = HeaderValue::from_bytes(&body)
        && !body.is_empty()
    {
        parts.headers.insert(X_CREDSTORE_PROBLEM, value);
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// 400 for a forwarded header forward auth cannot read: a gateway's configuration error.
fn bad_request(message: &str) -> Response {
    let doc = serde_json::json!({
        "type": format!("{}bad-request", credstore::http::DEFAULT_PROBLEM_TYPE_BASE),
        "title": "Bad request",
        "status": 400,
        "detail": redact::scrub(message),
        "code": "BAD_REQUEST",
    });
    let mut response = Response::new(axum::body::Body::from(doc.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_endpoint_comes_from_the_route_or_the_gateways_headers() {
        let get = Method::GET;
        let nginx = headers(&[("x-original-method", "post"), ("x-original-uri", "/v1/things?x=1")]);
        assert_eq!(
            endpoint(&get, "/v1/auth", &nginx),
            Ok(Some(("POST".into(), "/v1/things".into())))
        );
        let traefik = headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "https://api.example.com/v1/x/1?y"),
        ]);
        assert_eq!(
            endpoint(&get, "/v1/auth", &traefik),
            Ok(Some(("DELETE".into(), "/v1/x/1".into())))
        );
        // Envoy: the route's own method and path; headers a client slipped in do not count.
        assert_eq!(
            endpoint(&Method::PUT, "/v1/auth/v1/things/7", &nginx),
            Ok(Some(("PUT".into(), "/v1/things/7".into())))
        );
        // Half an endpoint is none; a garbled one is an error.
        assert_eq!(
            endpoint(&get, "/v1/auth", &headers(&[("x-original-uri", "/a")])),
            Ok(None)
        );
        assert!(
            endpoint(
                &get,
                "/v1/auth",
                &headers(&[("x-original-method", "G T"), ("x-original-uri", "/a")])
            )
            .is_err()
        );
        assert!(
            endpoint(
                &get,
                "/v1/auth",
                &headers(&[("x-original-method", "GET"), ("x-original-uri", "a b")])
            )
            .is_err()
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(["127.0.0.1"]).expect("proxies");
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 192.0.2.9"), ("x-real-ip", "198.51.100.1")]);
        let real = headers(&[("x-real-ip", "198.51.100.1")]);
        assert_eq!(client_ip(&proxies, ip("127.0.0.1"), &xff), ip("192.0.2.9"));
        assert_eq!(client_ip(&proxies, ip("127.0.0.1"), &real), ip("198.51.100.1"));
        assert_eq!(client_ip(&proxies, ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
        assert_eq!(client_ip(&proxies, ip("127.0.0.2"), &xff), ip("127.0.0.2"));
        assert_eq!(client_ip(&proxies, ip("127.0.0.2"), &real), ip("127.0.0.2"));
        assert_eq!(client_ip(&proxies, ip("::ffff:127.0.0.1"), &real), ip("198.51.100.1"));
    }
}

/// `ANY /v1/auth/{*path}` (Envoy `ext_authz` in HTTP mode, `path_prefix: /v1/auth`): the
/// same handler, [`forward_auth`], with the endpoint taken from the request's own method
/// and the path after the prefix. Only its OpenAPI entry lives here.
#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/auth/{path}", tag = "gateways",
    params(("path" = String, Path, description = "the original request's path")),
    responses(
        (status = 200, description = "Valid, as for /v1/auth"),
        (status = 401, description = "Refused, as for /v1/auth (402, 403, 429 likewise)"),
    ))]
#[expect(
    dead_code,
    reason = "documents the route `forward_auth` serves under /v1/auth/{*path}"
)]
pub(super) fn forward_auth_under_prefix() {}
