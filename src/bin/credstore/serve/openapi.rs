//! `GET /openapi.json`: the sidecar's OpenAPI 3.1 document, derived by utoipa from the
//! handlers' `#[utoipa::path]` attributes and the request and answer types (`ToSchema`,
//! `IntoParams`), never written by hand. A route added to `router()` belongs in
//! [`ApiDoc`]'s `paths` too: `tests/management_api.rs` compares the two.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::ApiError;
use super::{audit, auth, directory, keys, leaks, lifecycle, ops, owners, usage, vault, verify, webhooks};

/// The document: every route of the sidecar.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "credstore serve",
        description = "The credstore sidecar: key verification for hosts not written in Rust, and the management API (admin keys of the store only). Every answer but this document is the envelope {\"success\": true, \"data\": ...} or {\"success\": false, \"error\": {\"code\", \"message\"}}.",
    ),
    paths(
        openapi_json,
        verify::verify,
        keys::list_keys,
        keys::create_key,
        keys::revoke_by_key,
        keys::import_keys,
        keys::show_key,
        keys::update_key,
        keys::revoke_key,
        keys::disable_key,
        keys::enable_key,
        keys::rotate_key,
        keys::credit_key,
        owners::list_owners,
        owners::show_owner,
        owners::set_owner,
        owners::revoke_owner_keys,
        owners::disable_owner_keys,
        directory::list_plans,
        directory::set_plan,
        directory::delete_plan,
        directory::list_roles,
        directory::set_role,
        directory::delete_role,
        directory::list_users,
        directory::set_user,
        directory::remove_user,
        vault::list_secrets,
        vault::put_secret,
        vault::read_secret,
        vault::delete_secret,
        vault::rotate_master,
        audit::audit,
        audit::events,
        usage::usage,
        webhooks::list_webhooks,
        webhooks::add_webhook,
        webhooks::remove_webhook,
        lifecycle::show_policy,
        lifecycle::set_policy,
        lifecycle::clear_policy,
        leaks::report_leaks,
        auth::forward_auth,
        auth::forward_auth_under_prefix,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    modifiers(&AdminKeys),
    tags(
        (name = "verify", description = "Deciding on a key"),
        (name = "keys", description = "API keys (admin keys only)"),
        (name = "owners", description = "Owners: customers, teams or tenants whose limits and budget their keys share (admin keys only)"),
        (name = "plans", description = "Plans: rate limits and budgets keys follow (admin keys only)"),
        (name = "roles", description = "Roles: named permission sets (admin keys only)"),
        (name = "users", description = "Users, the owners of personal tokens (admin keys only)"),
        (name = "vault", description = "Provider secrets (admin keys only; reading a value needs vault:read)"),
        (name = "audit", description = "The audit log (admin keys only)"),
        (name = "usage", description = "Usage over time: decisions by outcome and credits spent, per key, owner, project or store (admin keys only)"),
        (name = "webhooks", description = "Webhooks the sidecar delivers events to, signed per Standard Webhooks (admin keys only)"),
        (name = "policy", description = "Lifecycle policies: max lifetime, unused expiry, least rotation grace (admin keys only)"),
        (name = "leaks", description = "Leaked-key reports from secret scanners (no key; rate limited per address)"),
        (name = "meta", description = "This document"),
        (name = "gateways", description = "Forward auth for nginx, Envoy and Traefik (docs/GATEWAYS.md)"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
    ),
)]
pub struct ApiDoc;

/// The two ways to present an admin key: `Authorization: Bearer` (`bearer`) or `X-API-Key`
/// (`api_key`), named by each management route's `security`.
struct AdminKeys;

impl Modify for AdminKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin key of the store (csa_...)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An admin key of the store (csa_...)",
            ))),
        );
    }
}

/// This document (OpenAPI 3.1, JSON). Open to any caller: it holds no key and no secret.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => ([(CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            &format!("the OpenAPI document did not serialise: {e}"),
        )
        .into_response(),
    }
}
