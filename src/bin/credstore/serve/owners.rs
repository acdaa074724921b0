//! The management API's owners (`credstore owner`), for admin keys: list, show, set
//! (`PUT`: what is given changes, the rest stays), and revoke or disable all of an owner's
//! keys in one logged operation. Answers hold the documents `owner ... --json` prints.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::OwnerUpdate;
use serde::Deserialize;
use utoipa::ToSchema;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, parse_json, parse_optional_json, success};
use super::keys::{budget, rate_limits};
use crate::output::docs::{OwnerDoc, OwnerKeysDoc};

/// Every owner, by id (`credstore owner list --json`).
#[utoipa::path(get, path = "/v1/owners", tag = "owners",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every owner", body = Success<Vec<OwnerDoc>>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_owners(_admin: Admin, State(store): State<Shared>) -> Response {
    let owners: Vec<OwnerDoc> = store.owners().iter().map(|o| OwnerDoc::from(o, None)).collect();
    success(StatusCode::OK, owners)
}

/// One owner, with its budget this period (`credstore owner show --json`).
#[utoipa::path(get, path = "/v1/owners/{id}", tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The owner", body = Success<OwnerDoc>),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such owner", body = Failure),
    ))]
pub async fn show_owner(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = blocking(&store, move |s| {
        let owner = s.owner(&id)?;
        let state = s.owner_budget(&id)?;
        Ok(OwnerDoc::from(&owner, state.as_ref()))
    })
    .await?;
    Ok(success(StatusCode::OK, doc))
}

/// `PUT /v1/owners/{id}`: the settings of `credstore owner set`; a field left out stays as
/// it was (a new owner's name is its id).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    /// A human name.
    name: Option<String>,
    /// Metadata, replacing the owner's; shown in every decision of its keys.
    metadata: Option<BTreeMap<String, String>>,
    /// Rate limits its keys share, `N/DURATION[:name]`, replacing the owner's.
    rate_limits: Option<Vec<String>>,
    /// A budget cap per period, shared by its keys.
    budget: Option<u64>,
    /// `monthly` (default), `monthly:DAY`, `daily` or `total`.
    budget_period: Option<String>,
    /// Remove the owner's budget.
    #[serde(default)]
    no_budget: bool,
}

/// Creates or changes an owner (`credstore owner set`); its keys follow at once.
#[utoipa::path(put, path = "/v1/owners/{id}", tag = "owners", request_body = OwnerBody,
    params(("id" = String, Path, description = "The owner's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The owner as it is now", body = Success<OwnerDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn set_owner(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: OwnerBody = parse_json(&body)?;
    let budget = match (budget(body.budget, body.budget_period.as_deref())?, body.no_budget) {
        (Some(_), true) => return Err(ApiError::bad_request("give budget or no_budget, not both")),
        (Some(b), false) => Some(Some(b)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let update = OwnerUpdate {
        name: body.name,
        metadata: body.metadata,
        rate_limits: body.rate_limits.as_deref().map(rate_limits).transpose()?,
        budget,
    };
    let doc = blocking(&store, move |s| {
        let owner = s.set_owner(&id, update)?;
        let state = s.owner_budget(&id)?;
        Ok(OwnerDoc::from(&owner, state.as_ref()))
    })
    .await?;
    Ok(success(StatusCode::OK, doc))
}

/// `POST /v1/owners/{id}/revoke-keys`: why, optionally.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeysBody {
    /// Why (kept with each key and in the audit log).
    reason: Option<String>,
}

/// Revokes every key of the owner, at once and for good, in one logged operation
/// (`credstore owner revoke-keys --json`).
#[utoipa::path(post, path = "/v1/owners/{id}/revoke-keys", tag = "owners", request_body = Option<RevokeKeysBody>,
    params(("id" = String, Path, description = "The owner's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The keys revoked", body = Success<OwnerKeysDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such owner", body = Failure),
    ))]
pub async fn revoke_owner_keys(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RevokeKeysBody = parse_optional_json(&body)?;
    let owner = id.clone();
    let ids = blocking(&store, move |s| s.revoke_owner_keys(&id, body.reason.as_deref())).await?;
    Ok(success(StatusCode::OK, keys_doc(owner, &ids)))
}

/// Disables every enabled key of the owner in one logged operation (`credstore owner
/// disable-keys --json`).
#[utoipa::path(post, path = "/v1/owners/{id}/disable-keys", tag = "owners",
    params(("id" = String, Path, description = "The owner's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The keys disabled", body = Success<OwnerKeysDoc>),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such owner", body = Failure),
    ))]
pub async fn disable_owner_keys(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let owner = id.clone();
    let ids = blocking(&store, move |s| s.disable_owner_keys(&id)).await?;
    Ok(success(StatusCode::OK, keys_doc(owner, &ids)))
}

fn keys_doc(owner: String, ids: &[credstore::KeyId]) -> OwnerKeysDoc {
    OwnerKeysDoc {
        owner,
        key_ids: ids.iter().map(ToString::to_string).collect(),
    }
}
