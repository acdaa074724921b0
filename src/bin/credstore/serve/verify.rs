//! `POST /v1/keys.verify`: the decision on a key as `verify --json` shapes it, for SDK-style
//! callers. Open to any caller that can reach the address: it tells the holder of a key
//! about that key.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use credstore::policy::PermissionQuery;
use credstore::{Env, Secret, VerifyRequest};
use serde::Deserialize;
use utoipa::ToSchema;

use super::api::{ApiError, Failure, Shared, Success, parse_json, success};
use super::ops::Decided;
use crate::output::docs::DecisionDoc;

/// `POST /v1/keys.verify`: the request to decide on, as `credstore verify` takes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The key presented.
    #[serde(deserialize_with = "secret")]
    #[schema(value_type = String)]
    key: Secret,
    /// Budget cost (default 1; 0 only checks).
    cost: Option<u64>,
    /// Rate-limit weight (default 1).
    weight: Option<u32>,
    /// The client's address.
    #[schema(value_type = Option<String>)]
    ip: Option<IpAddr>,
    /// The endpoint called, `METHOD PATH`.
    endpoint: Option<String>,
    /// The Referer (or Origin).
    referrer: Option<String>,
    /// Required permissions, e.g. `(docs:read OR docs:write) AND users:view`.
    require: Option<String>,
    /// The project the request is for.
    project: Option<String>,
    /// The environment the request is for: `live` or `test`.
    env: Option<String>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// Verifies a key and answers the decision, always with HTTP 200: the decision's own
/// status is in `data.status`.
#[utoipa::path(post, path = "/v1/keys.verify", tag = "verify", request_body = VerifyBody,
    responses(
        (status = 200, description = "The decision, valid or not", body = Success<DecisionDoc>),
        (status = 400, description = "A body that is no verify request", body = Failure),
    ))]
pub async fn verify(State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
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
        Ok(decision) => success(StatusCode::OK, DecisionDoc::from(&decision)),
        Err(e) => axum::response::IntoResponse::into_response(ApiError::from(e)),
    };
    // For the metrics (`serve/ops.rs`).
    response.extensions_mut().insert(decided);
    Ok(response)
}
