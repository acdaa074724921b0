//! The management API's keys: `credstore create | list | show | update | disable | enable |
//! revoke | rotate` over HTTP, for admin keys. Each answer holds the document the command
//! prints with `--json` ([`KeyDoc`], or [`CreatedDoc`] holding the new key, once).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::policy::{EndpointAllowlist, IpAllowlist, PermissionSet, ReferrerAllowlist, RoleName};
use credstore::record::KeyKind;
use credstore::redact;
use credstore::{
    Budget, Env, Expiry, FormatLength, FormatRequest, InputError, KeyId, KeyUpdate, ListFilter, NewKey, Period,
    RateLimit, Secret, Status, clock,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::api::{
    Admin, ApiError, Failure, Page, Shared, Success, blocking, page, parse_json, parse_optional_json, present, query,
    success,
};
use crate::output::docs::{CreatedDoc, ImportedDoc, KeyDoc};

/// A page holds this many keys unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// The most keys one page holds.
pub const MAX_PAGE: usize = 1000;

/// `GET /v1/api-keys`: which keys, and which page of them.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys of this project.
    project: Option<String>,
    /// Only keys with this prefix (`sk_live_`).
    prefix: Option<String>,
    /// Only keys with this status now: `active`, `disabled`, `expired` or `revoked`.
    status: Option<String>,
    /// Only keys of this owner.
    owner: Option<String>,
    /// Keys per page: 1 to 1000, 100 by default. (Taken as text and parsed here, so the
    /// query's fields are all text, as the fuzzers' mirror of it has them.)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The cursor: only keys created after the key with this id (the `next_cursor` of the
    /// page before).
    after: Option<String>,
}

/// Lists keys (`credstore list --json`), oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page of keys; `next_cursor` is null on the last", body = Page<KeyDoc>),
        (status = 400, description = "A bad filter, limit or cursor", body = Failure),
        (status = 401, description = "No key, or a key that does not verify", body = Failure),
        (status = 403, description = "Not an admin key", body = Failure),
    ))]
pub async fn list_keys(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(|e| ApiError::bad_request(&e))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(&format!(
                    "limit {}: give a whole number from 1 to {MAX_PAGE}",
                    redact::quote(text)
                ))
            })?,
    };
    let after = q.after.as_deref().map(KeyId::parse).transpose()?;
    let filter = ListFilter {
        project: q.project,
        prefix: q.prefix,
        status,
        owner: q.owner,
    };
    let keys = blocking(&store, move |s| s.list(&filter)).await?;
    // Key ids sort by creation, and `list` answers in id order: a page is the keys after
    // the cursor, so a key created while a client pages is never skipped nor repeated.
    let mut rest = keys
        .iter()
        .filter(|k| after.as_ref().is_none_or(|a| k.record.id > *a))
        .peekable();
    let docs: Vec<KeyDoc> = rest.by_ref().take(limit).map(KeyDoc::from).collect();
    let next = rest
        .peek()
        .is_some()
        .then(|| docs.last().map(|d| d.id.clone()))
        .flatten();
    Ok(page(docs, next))
}

/// `POST /v1/api-keys`: the fields of `credstore create`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// A name for the key.
    name: String,
    /// The key prefix, e.g. `sk_live_`, `cmp_`, `comp_`.
    prefix: Option<String>,
    /// `live` or `test`.
    env: Option<String>,
    /// Random characters (22 to 64).
    length: Option<usize>,
    /// The whole key's length, prefix and checksum included.
    total_length: Option<usize>,
    /// A checksum at the end (default true).
    #[serde(default = "yes")]
    #[schema(default = true)]
    checksum: bool,
    /// Register a further format for a prefix that already has one.
    #[serde(default)]
    new_format: bool,
    /// The project (default `default`).
    project: Option<String>,
    /// Lifetime: `90d`, `12h`, `30m`, `45s`.
    expires_in: Option<String>,
    /// Expiry as RFC 3339.
    expires_at: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Rate limits, `N/DURATION[:name]` as `--rate-limit` takes them.
    #[serde(default)]
    rate_limits: Vec<String>,
    /// A budget cap per period.
    budget: Option<u64>,
    /// `monthly` (default), `monthly:DAY`, `daily` or `total`.
    budget_period: Option<String>,
    /// A plan to follow.
    plan: Option<String>,
    /// The owner the key belongs to (an existing owner's id).
    owner: Option<String>,
    /// `service` (default) or `personal`.
    #[serde(rename = "type")]
    key_type: Option<String>,
    /// The user a personal token belongs to.
    user: Option<String>,
    /// A service account's role (admin, member, viewer, or one of the store's roles).
    role: Option<String>,
    /// Permissions beyond the role, `resource:action`.
    #[serde(default)]
    permissions: Vec<String>,
    /// Allowed client addresses or CIDR ranges.
    #[serde(default)]
    allow_ips: Vec<String>,
    /// Allowed referrer host patterns, e.g. `*.example.com`.
    #[serde(default)]
    allow_referrers: Vec<String>,
    /// Allowed endpoints, `METHOD GLOB`.
    #[serde(default)]
    allow_endpoints: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Issues a key (`credstore create --json`); the key is in this answer, and never again.
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = CreateBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The new key, shown this once", body = Success<CreatedDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "An unknown plan, role or user", body = Failure),
        (status = 409, description = "A state conflict (a personal token's user is no member of its project)", body = Failure),
    ))]
pub async fn create_key(admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body: CreateBody = parse_json(&body)?;
    let env = body.env.as_deref().map(str::parse::<Env>).transpose()?;
    let length = match (body.length, body.total_length) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give length or total_length, not both")),
        (Some(n), None) => Some(FormatLength::Random(n)),
        (None, Some(n)) => Some(FormatLength::Total(n)),
        (None, None) => None,
    };
    let role = body.role.as_deref().map(RoleName::parse).transpose()?;
    let format = crate::new_key_format(
        &store.formats(),
        role.as_ref(),
        &FormatRequest {
            prefix: body.prefix.as_deref(),
            env,
            length,
            no_checksum: !body.checksum,
            new_format: body.new_format,
        },
    )?;
    let mut new = NewKey::new(body.name).format(format);
    new.project = body.project;
    new.metadata = body.metadata;
    new.rate_limits = rate_limits(&body.rate_limits)?;
    new.budget = budget(body.budget, body.budget_period.as_deref())?;
    new.plan = body.plan;
    new.owner = body.owner;
    new.kind = match (body.key_type.as_deref().unwrap_or("service"), body.user) {
        ("service", None) => KeyKind::Service,
        ("personal", Some(user)) => KeyKind::Personal { user },
        ("personal", None) => return Err(InputError::KeyType("a personal token needs a user".into()).into()),
        ("service", Some(_)) => {
            return Err(InputError::KeyType("user is for personal tokens (type personal)".into()).into());
        }
        (other, _) => {
            return Err(ApiError::bad_request(&format!(
                "type {}: use service or personal",
                redact::quote(other)
            )));
        }
    };
    new.role = role;
    new.permissions = PermissionSet::parse(&body.permissions)?;
    new.allow_ips = IpAllowlist::new(&body.allow_ips)?;
    new.allow_referrers = ReferrerAllowlist::new(&body.allow_referrers)?;
    new.allow_endpoints = EndpointAllowlist::new(&body.allow_endpoints)?;
    new.expires = match (body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give expires_in or expires_at, not both")),
        (Some(d), None) => Some(Expiry::In(clock::parse_duration(&d)?)),
        (None, Some(t)) => Some(Expiry::At(clock::parse_time(&t)?)),
        (None, None) => None,
    };
    let Admin { key: admin, .. } = admin;
    let created = blocking(&store, move |s| s.create_as(admin.expose(), new)).await?;
    Ok(success(StatusCode::CREATED, CreatedDoc::from(&created, None)))
}

/// Shows one key (`credstore show --json`).
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key", body = Success<KeyDoc>),
        (status = 400, description = "Not a key id", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
    ))]
pub async fn show_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let info = blocking(&store, move |s| s.get(&id)).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// `PATCH /v1/api-keys/{id}`: the changes of `credstore update`. A field left out stays as
/// it is; a list given replaces the key's (`[]` empties it); `null` removes an expiry, a
/// budget or a plan.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// A new name.
    name: Option<String>,
    /// New metadata, replacing all of it (`{}` removes it).
    metadata: Option<BTreeMap<String, String>>,
    /// A new lifetime from now: `90d`, `12h`, `30m`, `45s`.
    expires_in: Option<String>,
    /// A new expiry as RFC 3339; `null` removes the expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    /// The key's own rate limits, `N/DURATION[:name]` (`[]` removes them).
    rate_limits: Option<Vec<String>>,
    /// A budget cap of its own; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    budget: Option<Option<u64>>,
    /// The budget's period, with `budget`: `monthly` (default), `monthly:DAY`, `daily`,
    /// `total`.
    budget_period: Option<String>,
    /// A plan to follow; `null` takes the key off its plan.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    plan: Option<Option<String>>,
    /// A new role (service accounts only).
    role: Option<String>,
    /// Permissions beyond the role, replacing the key's.
    permissions: Option<Vec<String>>,
    /// Allowed client addresses or CIDR ranges, replacing the key's (`[]`: any).
    allow_ips: Option<Vec<String>>,
    /// Allowed referrer host patterns, replacing the key's (`[]`: any).
    allow_referrers: Option<Vec<String>>,
    /// Allowed endpoints, replacing the key's (`[]`: any).
    allow_endpoints: Option<Vec<String>>,
}

/// Changes a key's settings (`credstore update --json`); only what is given changes.
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "keys", request_body = UpdateBody,
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key as it is now", body = Success<KeyDoc>),
        (status = 400, description = "Bad input, or nothing to change; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key, plan or role", body = Failure),
        (status = 409, description = "The key is revoked", body = Failure),
    ))]
pub async fn update_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let body: UpdateBody = parse_json(&body)?;
    let expires = match (body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give expires_in or expires_at, not both")),
        (Some(d), None) => Some(Some(Expiry::In(clock::parse_duration(&d)?))),
        (None, Some(Some(t))) => Some(Some(credstore::parse_expiry(&t)?)),
        (None, Some(None)) => Some(None),
        (None, None) => None,
    };
    let budget = match (body.budget, body.budget_period) {
        (Some(Some(cap)), period) => Some(budget(Some(cap), period.as_deref())?),
        (Some(None), None) => Some(None),
        (_, Some(_)) => return Err(ApiError::bad_request("budget_period goes with a budget")),
        (None, None) => None,
    };
    let update = KeyUpdate {
        name: body.name,
        metadata: body.metadata,
        expires,
        rate_limits: body.rate_limits.as_deref().map(rate_limits).transpose()?,
        budget,
        plan: body.plan,
        role: body.role.as_deref().map(RoleName::parse).transpose()?,
        permissions: body.permissions.as_deref().map(PermissionSet::parse).transpose()?,
        allow_ips: body.allow_ips.as_deref().map(IpAllowlist::new).transpose()?,
        allow_referrers: body
            .allow_referrers
            .as_deref()
            .map(ReferrerAllowlist::new)
            .transpose()?,
        allow_endpoints: body
            .allow_endpoints
            .as_deref()
            .map(EndpointAllowlist::new)
            .transpose()?,
    };
    if update.is_empty() {
        return Err(ApiError::bad_request("nothing to update: give at least one field"));
    }
    let info = blocking(&store, move |s| s.update(&id, update)).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// Disables a key, reversibly (`credstore disable --json`).
#[utoipa::path(post, path = "/v1/api-keys/{id}/disable", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key, disabled", body = Success<KeyDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
        (status = 409, description = "Revoked, or already disabled", body = Failure),
    ))]
pub async fn disable_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let info = blocking(&store, move |s| s.disable(&id)).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// Enables a disabled key (`credstore enable --json`).
#[utoipa::path(post, path = "/v1/api-keys/{id}/enable", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key, enabled", body = Success<KeyDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
        (status = 409, description = "Revoked, or not disabled", body = Failure),
    ))]
pub async fn enable_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let info = blocking(&store, move |s| s.enable(&id)).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// Why a key is revoked: in the body or as `?reason=`.
#[derive(Deserialize, Default, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RevokeBody {
    /// Why (kept in the key and the audit log).
    reason: Option<String>,
}

/// Revokes a key, at once and for good (`credstore revoke --json`).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys", params(("id" = String, Path, description = "The key's id"), RevokeBody),
    request_body(content = RevokeBody, description = "Optional: the reason may come in the body instead"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key, revoked", body = Success<KeyDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
        (status = 409, description = "Already revoked", body = Failure),
    ))]
pub async fn revoke_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    q: Result<Query<RevokeBody>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let from_query = query(q)?;
    let from_body: RevokeBody = parse_optional_json(&body)?;
    let reason = from_body.reason.or(from_query.reason);
    let info = blocking(&store, move |s| s.revoke(&id, reason.as_deref())).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// `POST /v1/api-keys/revoke-by-key`: a leaked key itself (`credstore revoke --key -`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeByKeyBody {
    /// The key itself, as it leaked. Finding it records no use of it.
    #[serde(deserialize_with = "secret")]
    #[schema(value_type = String)]
    key: Secret,
    /// Why (kept in the key and the audit log).
    reason: Option<String>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// Revokes a leaked key found by its value (`credstore revoke --key - --json`): for a key
/// seen in a repository or a log, whose id nobody has at hand.
#[utoipa::path(post, path = "/v1/api-keys/revoke-by-key", tag = "keys", request_body = RevokeByKeyBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key, revoked", body = Success<KeyDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "Not a key of this store (malformed, or unknown)", body = Failure),
        (status = 409, description = "Already revoked", body = Failure),
    ))]
pub async fn revoke_by_key(_admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body: RevokeByKeyBody = parse_json(&body)?;
    let found = blocking(&store, move |s| s.find_by_key(body.key.expose().trim())).await?;
    let Some(found) = found else {
        return Err(ApiError::not_found(
            "the key given is not a key of this store (malformed, or unknown)",
        ));
    };
    let id = found.record.id;
    let reason = body.reason;
    let info = blocking(&store, move |s| s.revoke(&id, reason.as_deref())).await?;
    Ok(success(StatusCode::OK, KeyDoc::from(&info)))
}

/// Imports keys of another system by the SHA-256 it kept of each (`credstore import
/// --json`): the body is JSON Lines, one key per line, or a JSON array of the same
/// objects: `{"sha256": HEX | "sha256_base64": B64, "prefix": "legacy_", "name": ..., and
/// the fields of POST /v1/api-keys but the shape's}`. Every line is checked before any key
/// is written; a bad one is 400 naming its line and field.
#[utoipa::path(post, path = "/v1/api-keys/import", tag = "keys",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "JSON Lines (or a JSON array) of keys to import"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The keys imported, in the lines' order", body = Success<ImportedDoc>),
        (status = 400, description = "A bad line (named), or no line; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "An unknown plan, role or user", body = Failure),
    ))]
pub async fn import_keys(_admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let keys = crate::import_cmd::import_keys(text)?;
    if keys.is_empty() {
        return Err(ApiError::bad_request("nothing to import: the body holds no lines"));
    }
    let lines: Vec<usize> = keys.iter().map(|k| k.line).collect();
    let records = blocking(&store, move |s| s.import(keys, |_| {})).await?;
    Ok(success(StatusCode::CREATED, ImportedDoc::from(&records, &lines)))
}

/// `POST /v1/api-keys/{id}/rotate`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Keep the old key valid this long, e.g. `24h` (default: it stops at once).
    grace: Option<String>,
}

/// Issues a new key with the same settings (`credstore rotate --json`); the new key is in
/// this answer, and never again. The old key stops now, or after `grace`.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body(content = RotateBody, description = "Optional"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new key, shown this once", body = Success<CreatedDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
        (status = 409, description = "Revoked, or already rotated", body = Failure),
    ))]
pub async fn rotate_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let body: RotateBody = parse_optional_json(&body)?;
    let grace = body
        .grace
        .as_deref()
        .map(clock::parse_duration)
        .transpose()?
        .map(|ms| Duration::from_millis(ms.unsigned_abs()));
    let rotated = blocking(&store, move |s| s.rotate(&id, grace)).await?;
    Ok(success(StatusCode::OK, CreatedDoc::rotated(&rotated)))
}

/// Rate limits as `--rate-limit` takes them.
pub fn rate_limits(texts: &[String]) -> Result<Vec<RateLimit>, ApiError> {
    Ok(texts.iter().map(|r| RateLimit::parse(r)).collect::<Result<_, _>>()?)
}

/// A budget of `cap` per `period` (`monthly` when none is given).
pub fn budget(cap: Option<u64>, period: Option<&str>) -> Result<Option<Budget>, ApiError> {
    let Some(cap) = cap else {
        if period.is_some() {
            return Err(ApiError::bad_request("budget_period goes with a budget"));
        }
        return Ok(None);
    };
    let period: Period = period.unwrap_or("monthly").parse()?;
    Ok(Some(Budget::new(cap, period)?))
}

/// `POST /v1/api-keys/{id}/credits`: a change of the key's budget credit this period, as
/// `credstore credits add|set` takes it: exactly one of `add` (negative: take away) and
/// `set` (what is left).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsBody {
    /// Add this much to what is left this period (negative: take it away).
    add: Option<i64>,
    /// Make what is left this period exactly this.
    set: Option<u64>,
    /// Why (kept in the audit log).
    reason: Option<String>,
}

/// A budget's credit after a change (`credstore credits ... --json`).
#[derive(serde::Serialize, ToSchema)]
pub struct CreditDoc {
    /// The key.
    key_id: String,
    /// The credit this period: what was added to (negative: taken from) the cap.
    credit: i64,
    /// The cap in force this period.
    cap: u64,
    /// What is left to spend this period.
    remaining: u64,
}

/// Gives the key's budget credit this period, takes it away, or sets what is left
/// (`credstore credits add|set --json`); logged as `budget.credited` with the reason.
#[utoipa::path(post, path = "/v1/api-keys/{id}/credits", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = CreditsBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The budget's credit, cap and what is left this period", body = Success<CreditDoc>),
        (status = 400, description = "Not exactly one of add and set, or a bad reason", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such key", body = Failure),
        (status = 409, description = "The key has no budget, or was rotated", body = Failure),
    ))]
pub async fn credit_key(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id)?;
    let body: CreditsBody = parse_json(&body)?;
    let reason = body.reason;
    let key_id = id.to_string();
    let credit = match (body.add, body.set) {
        (Some(amount), None) => blocking(&store, move |s| s.credits_add(&id, amount, reason)).await?,
        (None, Some(left)) => blocking(&store, move |s| s.credits_set(&id, left, reason)).await?,
        _ => return Err(ApiError::bad_request("give exactly one of add and set")),
    };
    Ok(success(
        StatusCode::OK,
        CreditDoc {
            key_id,
            credit: credit.credit,
            cap: credit.cap,
            remaining: credit.remaining,
        },
    ))
}
