//! The management API's directory: plans, roles and users (`credstore plan | role | user`),
//! for admin keys. `PUT` creates or replaces one by name, as `set` does; lists answer the
//! documents `list --json` prints.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::Plan;
use credstore::policy::{PermissionSet, Role, RoleName, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Admin, ApiError, Failure, Shared, Success, blocking, parse_json, success};
use super::keys::{budget, rate_limits};
use crate::output::docs::{PlanDoc, RoleDoc, UserDoc};

/// What a delete answers: the name of what is gone.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The plan's or role's name, or the user's id.
    pub deleted: String,
}

/// Every plan, by name (`credstore plan list --json`).
#[utoipa::path(get, path = "/v1/plans", tag = "plans",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every plan", body = Success<Vec<PlanDoc>>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_plans(_admin: Admin, State(store): State<Shared>) -> Response {
    let plans: Vec<PlanDoc> = store.plans().iter().map(PlanDoc::from).collect();
    success(StatusCode::OK, plans)
}

/// `PUT /v1/plans/{name}`: the limits of `credstore plan set`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Rate limits, `N/DURATION[:name]`.
    #[serde(default)]
    rate_limits: Vec<String>,
    /// A budget cap per period.
    budget: Option<u64>,
    /// `monthly` (default), `monthly:DAY`, `daily` or `total`.
    budget_period: Option<String>,
}

/// Creates or replaces a plan (`credstore plan set`); keys on it follow it at once.
#[utoipa::path(put, path = "/v1/plans/{name}", tag = "plans", request_body = PlanBody,
    params(("name" = String, Path, description = "The plan's name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The plan as it is now", body = Success<PlanDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn set_plan(
    _admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: PlanBody = parse_json(&body)?;
    let plan = Plan::new(
        name,
        rate_limits(&body.rate_limits)?,
        budget(body.budget, body.budget_period.as_deref())?,
    )?;
    let doc = PlanDoc::from(&plan);
    blocking(&store, move |s| s.set_plan(plan)).await?;
    Ok(success(StatusCode::OK, doc))
}

/// Deletes a plan no key follows (`credstore plan delete`).
#[utoipa::path(delete, path = "/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path, description = "The plan's name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success<Deleted>),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such plan", body = Failure),
        (status = 409, description = "Keys still follow it", body = Failure),
    ))]
pub async fn delete_plan(
    _admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = name.clone();
    blocking(&store, move |s| s.delete_plan(&name)).await?;
    Ok(success(StatusCode::OK, Deleted { deleted }))
}

/// Every role, built-in and the store's own, by name (`credstore role list --json`).
#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every role", body = Success<Vec<RoleDoc>>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_roles(_admin: Admin, State(store): State<Shared>) -> Response {
    let roles: Vec<RoleDoc> = store.roles().iter().map(RoleDoc::from).collect();
    success(StatusCode::OK, roles)
}

/// `PUT /v1/roles/{name}`: the permissions of `credstore role set`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// What the role grants, `resource:action` (`*` for any segment).
    permissions: Vec<String>,
}

/// Creates or replaces a role (`credstore role set`); service accounts with it follow it at
/// once. The built-in roles cannot be redefined.
#[utoipa::path(put, path = "/v1/roles/{name}", tag = "roles", request_body = RoleBody,
    params(("name" = String, Path, description = "The role's name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The role as it is now", body = Success<RoleDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 409, description = "A built-in role", body = Failure),
    ))]
pub async fn set_role(
    _admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RoleBody = parse_json(&body)?;
    let role = Role::new(RoleName::parse(&name)?, PermissionSet::parse(&body.permissions)?);
    let doc = RoleDoc::from(&role);
    blocking(&store, move |s| s.set_role(role)).await?;
    Ok(success(StatusCode::OK, doc))
}

/// Deletes a role no key and no user has (`credstore role delete`).
#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path, description = "The role's name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success<Deleted>),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such role", body = Failure),
        (status = 409, description = "Built in, or still in use", body = Failure),
    ))]
pub async fn delete_role(
    _admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = name.clone();
    blocking(&store, move |s| s.delete_role(&name)).await?;
    Ok(success(StatusCode::OK, Deleted { deleted }))
}

/// Every user, by id (`credstore user list --json`).
#[utoipa::path(get, path = "/v1/users", tag = "users",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every user", body = Success<Vec<UserDoc>>),
        (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_users(_admin: Admin, State(store): State<Shared>) -> Response {
    let users: Vec<UserDoc> = store.users().iter().map(UserDoc::from).collect();
    success(StatusCode::OK, users)
}

/// `PUT /v1/users/{id}`: the memberships of `credstore user set`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// Project → the user's role there (replacing every membership).
    #[serde(default)]
    memberships: BTreeMap<String, String>,
}

/// Creates or replaces a user and their memberships (`credstore user set`); their personal
/// tokens act with the new roles from the next request.
#[utoipa::path(put, path = "/v1/users/{id}", tag = "users", request_body = UserBody,
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The user as they are now", body = Success<UserDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "A membership names no role", body = Failure),
    ))]
pub async fn set_user(
    admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: UserBody = parse_json(&body)?;
    let mut user = User::new(id)?;
    for (project, role) in body.memberships {
        user.memberships.insert(project, RoleName::parse(&role)?);
    }
    let doc = UserDoc::from(&user);
    let key = admin.key;
    blocking(&store, move |s| s.set_user_as(key.expose(), user)).await?;
    Ok(success(StatusCode::OK, doc))
}

/// Removes a user (`credstore user remove`): their personal tokens are refused from the
/// next request.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Removed", body = Success<Deleted>),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such user", body = Failure),
    ))]
pub async fn remove_user(
    _admin: Admin,
    State(store): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let deleted = id.clone();
    blocking(&store, move |s| s.remove_user(&id)).await?;
    Ok(success(StatusCode::OK, Deleted { deleted }))
}
