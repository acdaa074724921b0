//! `GET /v1/audit`: events from the audit log (`credstore audit --json`), for admin keys.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::{Clock, EventFilter, KeyId, clock, redact};
use serde::Deserialize;
use utoipa::IntoParams;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, page, query, success};
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

/// Which part of the change feed (`credstore events --json`).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The events of the records after this one (default 0: from the first). Pass the
    /// answer's `next_cursor` to follow the feed.
    #[param(value_type = Option<u64>)]
    after: Option<String>,
    /// When nothing came after `after` yet: wait this long for it (a duration, `10s`; at
    /// most 25 s, within the request timeout; default: answer at once). A long poll.
    wait: Option<String>,
    /// At most this many records (default 1,000; at most 10,000). A `key.uses` record
    /// gives one `key.used` event per use.
    #[param(value_type = Option<u64>)]
    limit: Option<String>,
}

/// The longest a long poll of the feed waits.
const MAX_WAIT_MS: i64 = 25_000;

/// The change feed: the events after record `after`, oldest first, waiting up to `wait` for
/// one when there is none yet; `next_cursor` is the record to pass as `after` next.
#[utoipa::path(get, path = "/v1/events", tag = "audit", params(EventsQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The events, and next_cursor: the last record read", body = Success<Vec<EventDoc>>),
        (status = 400, description = "A bad after, wait or limit", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn events(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let number = |name: &str, text: &str| {
        text.parse::<u64>()
            .map_err(|_| ApiError::bad_request(&format!("{name} {}: give a whole number", redact::quote(text))))
    };
    let after = q.after.as_deref().map(|t| number("after", t)).transpose()?.unwrap_or(0);
    let limit = q
        .limit
        .as_deref()
        .map(|t| number("limit", t))
        .transpose()?
        .unwrap_or(1_000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit: give 1 to 10000"));
    }
    let wait_ms = match q.wait.as_deref() {
        None => 0,
        Some(text) => clock::parse_duration(text)
            .ok()
            .filter(|ms| (0..=MAX_WAIT_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::bad_request(&format!("wait {}: give a duration up to 25s", redact::quote(text)))
            })?,
    };
    let limit = usize::try_from(limit).unwrap_or(10_000);
    let wait = std::time::Duration::from_millis(wait_ms.unsigned_abs());
    let events = blocking(&store, move |s| {
        let events = s.events_after(after, limit)?;
        if events.is_empty() && !wait.is_zero() {
            s.wait_for_record(after, wait);
            return s.events_after(after, limit);
        }
        Ok(events)
    })
    .await?;
    let next = events.last().map_or(after, |(seq, _)| *seq);
    let docs: Vec<EventDoc> = events.iter().map(|(seq, e)| EventDoc::from(*seq, e)).collect();
    Ok(page(docs, Some(next.to_string())))
}
