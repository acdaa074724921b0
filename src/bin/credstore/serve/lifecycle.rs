//! `GET|PUT|DELETE /v1/policy`: the lifecycle policies (`credstore policy show|set|clear`),
//! for admin keys. `PUT` replaces one scope's policy whole; `DELETE` clears one.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::clock::parse_duration;
use credstore::lifecycle::{Lifecycle, Scope};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::api::{Admin, ApiError, Failure, Shared, blocking, parse_json, query, success};
use crate::policy_cmd::policies_json;

/// Every scope's lifecycle policy (`credstore policy show --json`): `{"policies":
/// [{"scope", "max_lifetime", "unused_expiry", "min_grace"}]}`, durations as `366d`.
#[utoipa::path(get, path = "/v1/policy", tag = "policy",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every policy", body = Success<Object>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn show_policy(_admin: Admin, State(store): State<Shared>) -> Response {
    success(StatusCode::OK, policies_json(&store.lifecycle_policies()))
}

/// `PUT /v1/policy`: one scope's policy, whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The policy of this project's keys (neither this nor `format`: the store's).
    project: Option<String>,
    /// The policy of the keys of the format with this prefix.
    format: Option<String>,
    /// The longest a key may live, e.g. `366d`.
    max_lifetime: Option<String>,
    /// A key unused this long is expired, e.g. `90d`.
    unused_expiry: Option<String>,
    /// The least grace a rotation gives, e.g. `1h`.
    min_grace: Option<String>,
}

/// Sets one scope's lifecycle policy, replacing what it had (`credstore policy set`).
#[utoipa::path(put, path = "/v1/policy", tag = "policy", request_body = PolicyBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The scope's policy as it is now", body = Success<Object>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn set_policy(_admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body: PolicyBody = parse_json(&body)?;
    let scope = Scope::from_options(body.project.as_deref(), body.format.as_deref())?;
    let ms = |text: Option<&str>| text.map(parse_duration).transpose();
    let policy = Lifecycle {
        max_lifetime_ms: ms(body.max_lifetime.as_deref())?,
        unused_expiry_ms: ms(body.unused_expiry.as_deref())?,
        min_grace_ms: ms(body.min_grace.as_deref())?,
    };
    let doc = policy.to_json_in(&scope);
    blocking(&store, move |s| s.set_lifecycle(scope, policy)).await?;
    Ok(success(StatusCode::OK, doc))
}

/// `DELETE /v1/policy?project=P|format=PREFIX` (neither: the store's).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// The project whose policy to clear.
    project: Option<String>,
    /// The prefix of the format whose policy to clear.
    format: Option<String>,
}

/// Clears one scope's lifecycle policy (`credstore policy clear`).
#[utoipa::path(delete, path = "/v1/policy", tag = "policy", params(ScopeQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Cleared", body = Success<Object>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 409, description = "The scope has no policy", body = Failure),
    ))]
pub async fn clear_policy(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<ScopeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let scope = Scope::from_options(q.project.as_deref(), q.format.as_deref())?;
    let name = scope.name();
    blocking(&store, move |s| s.clear_lifecycle(&scope)).await?;
    Ok(success(
        StatusCode::OK,
        serde_json::json!({ "scope": name, "cleared": true }),
    ))
}
