//! `GET /v1/audit`: events from the audit log (`credstore audit --json`), for admin keys.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::{Clock, EventFilter, KeyId, clock};
use serde::Deserialize;
use utoipa::IntoParams;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, query, success};
use crate::output::docs::EventDoc;

/// Which events, as `credstore audit` filters them.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events of this key (its id).
    key: Option<String>,
    /// Only events of this kind: `key.created`, `key.revoked`, `plan.set`, `vault.read`, ...
    kind: Option<String>,
    /// Only events at or after this time: RFC 3339, a date (`2026-12-02`, from midnight
    /// UTC), or a duration before now (`1h`, `7d`).
    since: Option<String>,
    /// Only events before this time, in the forms `since` takes.
    until: Option<String>,
    /// Newest first (default: oldest first).
    #[serde(default)]
    newest_first: bool,
    /// At most this many events, the first in the order asked for (default: all).
    limit: Option<usize>,
}

/// Events from the audit log, filtered (`credstore audit --json`).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The events", body = Success<Vec<EventDoc>>),
        (status = 400, description = "A bad filter", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn audit(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let now = clock::SystemClock.now_ms();
    let filter = EventFilter {
        key: q.key.as_deref().map(KeyId::parse).transpose()?,
        kind: q.kind,
        since: q.since.as_deref().map(|t| clock::parse_instant(t, now)).transpose()?,
        until: q.until.as_deref().map(|t| clock::parse_instant(t, now)).transpose()?,
        newest_first: q.newest_first,
    };
    let limit = q.limit.unwrap_or(usize::MAX);
    let events = blocking(&store, move |s| s.events(&filter)).await?;
    let docs: Vec<EventDoc> = events
        .iter()
        .take(limit)
        .map(|(seq, e)| EventDoc::from(*seq, e))
        .collect();
    Ok(success(StatusCode::OK, docs))
}
