//! `GET /v1/usage`: usage over time (`credstore usage --json`), for admin keys.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::{Clock, Granularity, KeyId, UsageCounts, UsageQuery, UsageReport, UsageSubject, clock};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, query, success};

/// Whose usage, from when, until when, by what: as `credstore usage` takes them.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// A key's id. At most one of `key`, `owner`, `project`; none: the whole store.
    key: Option<String>,
    /// Every key of this owner.
    owner: Option<String>,
    /// Every key of this project.
    project: Option<String>,
    /// From: RFC 3339, a date (`2026-12-02`), or a duration before now (`30d`); default
    /// 1h by minute, 24h by hour, 30d by day, 365d by month.
    since: Option<String>,
    /// Until (default: now), in the forms `since` takes.
    until: Option<String>,
    /// `minute`, `hour`, `day` (default) or `month`.
    by: Option<String>,
}

/// A bucket's or a total's counts.
#[derive(Serialize, ToSchema)]
pub struct CountsDoc {
    /// `VALID` decisions.
    valid: u64,
    /// Denials by code (`RATE_LIMITED`, `REVOKED`, ...); codes with none are left out.
    denied: BTreeMap<String, u64>,
    /// Credits valid requests spent.
    spent: u64,
}

/// One bucket.
#[derive(Serialize, ToSchema)]
pub struct BucketDoc {
    /// Its start (RFC 3339).
    start: String,
    /// `VALID` decisions.
    valid: u64,
    /// Denials by code.
    denied: BTreeMap<String, u64>,
    /// Credits valid requests spent.
    spent: u64,
}

/// DESIGN.md's usage document: every bucket in the range, zero-filled, and the total.
#[derive(Serialize, ToSchema)]
pub struct UsageDoc {
    /// `minute`, `hour`, `day` or `month`.
    by: String,
    /// As asked (RFC 3339).
    since: String,
    /// As asked (RFC 3339).
    until: String,
    /// Oldest first.
    buckets: Vec<BucketDoc>,
    /// The sum of the buckets.
    total: CountsDoc,
    /// The `key.anomaly` events of the subject in the range, oldest first: `{"at",
    /// "key_id"?, "reason", "window": {"start", "end"}, "observed", "baseline",
    /// "network"?}`.
    #[schema(value_type = Vec<Object>)]
    anomalies: Vec<serde_json::Value>,
}

impl UsageDoc {
    fn from(report: &UsageReport) -> UsageDoc {
        let denied = |c: &UsageCounts| {
            c.denied
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| (code.as_str().to_string(), *n))
                .collect()
        };
        UsageDoc {
            by: report.by.as_str().to_string(),
            since: clock::fmt_time(report.since),
            until: clock::fmt_time(report.until),
            buckets: report
                .buckets
                .iter()
                .map(|b| BucketDoc {
                    start: clock::fmt_time(b.start),
                    valid: b.counts.valid,
                    denied: denied(&b.counts),
                    spent: b.counts.spent,
                })
                .collect(),
            total: CountsDoc {
                valid: report.total.valid,
                denied: denied(&report.total),
                spent: report.total.spent,
            },
            anomalies: report.anomalies.iter().map(|a| a.to_json()).collect(),
        }
    }
}

/// A key's, an owner's, a project's or the whole store's decisions by outcome and the
/// credits they spent, per bucket, zero-filled (`credstore usage --json`). A range older
/// than the granularity's tier keeps is refused, saying what is kept.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageParams),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The buckets and their total", body = Success<UsageDoc>),
        (status = 400, description = "A bad subject, range or granularity, or a range past retention", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
    ))]
pub async fn usage(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let subject = match (q.key, q.owner, q.project) {
        (Some(key), None, None) => UsageSubject::Key(KeyId::parse(&key)?),
        (None, Some(owner), None) => UsageSubject::Owner(owner),
        (None, None, Some(project)) => UsageSubject::Project(project),
        (None, None, None) => UsageSubject::All,
        _ => return Err(ApiError::bad_request("give at most one of key, owner and project")),
    };
    let by =
        q.by.as_deref()
            .map(Granularity::parse)
            .transpose()?
            .unwrap_or(Granularity::Day);
    let now = clock::SystemClock.now_ms();
    let since_text = q.since.as_deref().unwrap_or(by.default_since());
    let since = clock::parse_instant(since_text, now)?;
    let until = q
        .until
        .as_deref()
        .map(|t| clock::parse_instant(t, now))
        .transpose()?
        .unwrap_or(now + 1);
    let query = UsageQuery::new(subject, since, until, by);
    let report = blocking(&store, move |s| s.usage(&query)).await?;
    Ok(success(StatusCode::OK, UsageDoc::from(&report)))
}
