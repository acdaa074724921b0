//! `GET /v1/audit`: events from the audit log (`credstore audit --json`), for admin keys.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::{Clock, EventFilter, KeyId, clock, redact};
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
    /// `true`: newest first (default: oldest first).
    #[param(value_type = Option<bool>)]
    newest_first: Option<String>,
    /// At most this many events, the first in the order asked for (default: all).
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}
// `newest_first` and `limit` are taken as text and parsed here, so the query's fields are
// all text, as the fuzzers' mirror of it (fuzz/http_checks.rs) has them.

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
        newest_first: match q.newest_first.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(&format!(
                    "newest_first {}: give true or false",
                    redact::quote(other)
                )));
            }
        },
    };
    let limit = match q.limit.as_deref() {
        None => usize::MAX,
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::bad_request(&format!("limit {}: give a whole number", redact::quote(text))))?,
    };
    let events = blocking(&store, move |s| s.events(&filter)).await?;
    let docs: Vec<EventDoc> = events
        .iter()
        .take(limit)
        .map(|(seq, e)| EventDoc::from(*seq, e))
        .collect();
    Ok(success(StatusCode::OK, docs))
}
