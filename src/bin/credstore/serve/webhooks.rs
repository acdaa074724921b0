//! `GET|POST /v1/webhooks`, `DELETE /v1/webhooks/{id}`: the webhooks this sidecar delivers
//! to (`credstore webhook list | add | remove`), for admin keys. Delivery itself is
//! `serve/delivery.rs`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::webhook::WebhookId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, parse_json, success};
use crate::output::docs::{AddedWebhookDoc, WebhookDoc};

/// `POST /v1/webhooks`: what `credstore webhook add` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where to deliver: an `https://` URL (or `http://` on loopback or a private network).
    url: String,
    /// The event kinds to deliver (`key.created`, `key.revoked`, `budget.threshold`, ...;
    /// `*` for all but `webhook.*`).
    events: Vec<String>,
}

/// What a removal answers.
#[derive(Serialize, ToSchema)]
pub struct RemovedWebhook {
    /// The webhook's id.
    pub removed: String,
}

/// Every registered webhook (`credstore webhook list --json`).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every webhook, by id", body = Success<Vec<WebhookDoc>>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_webhooks(_admin: Admin, State(store): State<Shared>) -> Result<Response, ApiError> {
    let webhooks = blocking(&store, credstore::Store::webhooks).await?;
    let docs: Vec<WebhookDoc> = webhooks.iter().map(WebhookDoc::from).collect();
    Ok(success(StatusCode::OK, docs))
}

/// Registers a webhook for the events that commit from now on (`credstore webhook add
/// --json`); the answer holds its signing secret, this once. Logged as `webhook.added`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The webhook and its signing secret (shown once)", body = Success<AddedWebhookDoc>),
        (status = 400, description = "A bad URL or event kind; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn add_webhook(_admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body: WebhookBody = parse_json(&body)?;
    let (webhook, secret) = blocking(&store, move |s| s.webhook_add(&body.url, &body.events)).await?;
    let doc = AddedWebhookDoc {
        webhook: WebhookDoc::from(&webhook),
        secret: secret.expose().to_string(),
    };
    Ok(success(StatusCode::CREATED, doc))
}

/// Removes a webhook (`credstore webhook remove`): nothing more is delivered to it.
/// Logged as `webhook.removed`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id (wh_...)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Removed", body = Success<RemovedWebhook>),
        (status = 400, description = "Not a webhook id", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such webhook", body = Failure),
    ))]
pub async fn remove_webhook(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = WebhookId::parse(&id)?;
    let removed = id.to_string();
    blocking(&store, move |s| s.webhook_remove(&id)).await?;
    Ok(success(StatusCode::OK, RemovedWebhook { removed }))
}
