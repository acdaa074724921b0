//! `POST /v1/dashboard/sessions`: a single-use link to the customers' dashboard for an
//! owner (`credstore dashboard link`), for admin keys. The page itself is
//! `credstore::dashboard::router`, mounted at `/dashboard/` by `serve --dashboard`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::response::Response;
use credstore::clock::fmt_time;
use credstore::dashboard::{LinkRequest, Scopes};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, parse_json, success};

/// What `credstore dashboard link` takes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The owner whose keys the session manages.
    owner: String,
    /// How long the link works if unused, e.g. `15m` (default; at most `24h`).
    ttl: Option<String>,
    /// How long the session lasts once the link is used, e.g. `8h` (default; at most `7d`).
    session_ttl: Option<String>,
    /// What the session may do (default all): `keys:read`, `keys:create`, `keys:revoke`,
    /// `keys:roll`, `budget:set`, `usage:read`.
    #[serde(default)]
    scopes: Vec<String>,
    /// Where the page's "Back" link leads (`http://` or `https://`).
    return_url: Option<String>,
}

/// A link minted.
#[derive(Serialize, ToSchema)]
pub struct LinkDoc {
    /// The link: send it to the owner only; it works once.
    pub url: String,
    /// When it stops working if unused (RFC 3339).
    pub expires_at: String,
}

/// Mints a single-use link to the customers' dashboard for an owner; logged as
/// `dashboard.link_minted` (with the link's hash only).
#[utoipa::path(post, path = "/v1/dashboard/sessions", tag = "dashboard", request_body = LinkBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The link (shown once)", body = Success<LinkDoc>),
        (status = 400, description = "A bad ttl, scope or return URL; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such owner", body = Failure),
    ))]
pub async fn mint_link(
    _admin: Admin,
    State(store): State<Shared>,
    axum::Extension(base): axum::Extension<DashboardBase>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: LinkBody = parse_json(&body)?;
    let duration = |text: Option<&str>, default: Duration| -> Result<Duration, credstore::Error> {
        match text {
            None => Ok(default),
            Some(t) => credstore::clock::parse_duration(t)
                .map(|ms| Duration::from_millis(ms.unsigned_abs()))
                .map_err(credstore::Error::from),
        }
    };
    let request = LinkRequest {
        ttl: duration(body.ttl.as_deref(), credstore::dashboard::DEFAULT_LINK_TTL)?,
        session_ttl: duration(body.session_ttl.as_deref(), credstore::dashboard::DEFAULT_SESSION_TTL)?,
        scopes: Scopes::parse(&body.scopes).map_err(credstore::Error::from)?,
        return_url: body.return_url,
        ..LinkRequest::new(body.owner)
    };
    let link = blocking(&store, move |s| s.mint_dashboard_link(&request)).await?;
    // The base the operator configured, else this host as the caller reached it.
    let base = base.0.unwrap_or_else(|| {
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        format!("http://{host}/dashboard")
    });
    let doc = LinkDoc {
        url: link.url(&base),
        expires_at: fmt_time(link.expires_at),
    };
    Ok(success(StatusCode::CREATED, doc))
}

/// Where the dashboard's links point (`serve --dashboard-url`; none: this host).
#[derive(Clone)]
pub struct DashboardBase(pub Option<String>);
