//! What every handler of the sidecar shares: the admin-key extractor, the `{"success": ...}`
//! envelopes, the typed errors and how the store's errors map to them, body and query
//! parsing that never echoes a secret, and running store work off the async workers.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::CACHE_CONTROL;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use credstore::http::KeySource;
use credstore::policy::{Permission, PermissionQuery};
use credstore::redact;
use credstore::vault::VaultError;
use credstore::{Error, InputError, KeyRecord, Secret, StateError, Store, VerifyRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The store every handler serves.
pub type Shared = Arc<Store>;

/// An admin key of this store, checked with [`Store::authorize_admin`]: a request that
/// lacks one is answered 401 (no key, or a key that does not verify: unknown, revoked,
/// disabled, expired) or 403 `ADMIN_REQUIRED` (a valid key that is not an admin key).
pub struct Admin {
    /// The key itself, for the store's `*_as` calls.
    pub key: Secret,
    /// Its record: its own permissions say what beyond the admin role it may do.
    pub record: Arc<KeyRecord>,
}

impl Admin {
    /// The permission an admin key needs, among its own permissions, to read a provider
    /// secret's value. The admin role grants everything else, but not this: an admin key
    /// reads secrets only when it was given `vault:read` (or a wider grant such as
    /// `vault:*`) with `--permission` at create or update.
    pub const VAULT_READ: &'static str = "vault:read";

    /// 403 `INSUFFICIENT_PERMISSIONS` unless the key's own permissions grant `permission`.
    pub fn require_own(&self, permission: &'static str) -> Result<(), ApiError> {
        let wanted = Permission::parse(permission)?;
        if self.record.permissions.allows(&wanted) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "INSUFFICIENT_PERMISSIONS",
            &format!(
                "this needs an admin key with the permission {permission} of its own (the admin role alone does not grant it)"
            ),
        ))
    }
}

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, store: &Shared) -> Result<Self, Self::Rejection> {
        let sources = [KeySource::Bearer, KeySource::x_api_key()];
        let Some(key) = sources.iter().find_map(|s| s.find(&parts.headers)) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the management API needs an admin key of this store: Authorization: Bearer <key>, or X-API-Key",
            ));
        };
        match store.authorize_admin(key, "the management API") {
            Ok(record) => Ok(Admin {
                key: Secret::new(key.to_string()),
                record,
            }),
            Err(Error::State(StateError::AdminRequired(_))) => Err(not_admin(store, key)),
            Err(e) => Err(e.into()),
        }
    }
}

/// 401 for a key that is no valid key at all, 403 for a valid key that is not an admin
/// key.
fn not_admin(store: &Store, key: &str) -> ApiError {
    // The same request `authorize_admin` makes: cost 0, weight 0, requiring `*`; it has
    // no side effect unless the key is an admin key, which it just was not.
    let everything = PermissionQuery::parse("*");
    let status = everything
        .ok()
        .and_then(|q| {
            store
                .verify_admin(&VerifyRequest::new(key).cost(0).weight(0).require(&q))
                .ok()
        })
        .map_or(401, |d| d.http_status());
    if status == 401 {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "not a valid key of this store",
        )
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "ADMIN_REQUIRED",
            "the management API requires an admin key of this store",
        )
    }
}

/// Runs store work that may wait on disk (a commit's fsync, a log scan) off the async
/// workers.
pub async fn blocking<T, F>(store: &Shared, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> credstore::Result<T> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", &e.to_string()))?
        .map_err(ApiError::from)
}

/// serde's messages repeat a value of the wrong type (`invalid type: string "..."`):
/// scrubbed of secret-shaped tokens.
///
/// A body must be a JSON object: serde's derive would also take an array of the fields in
/// order (`["sk_live_...", null, ...]`), a shape no client means to send.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("invalid JSON body: expected a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(&format!("invalid JSON body: {}", redact::scrub(&e.to_string()))))
}

/// An empty body is the default.
pub fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// A query string as `T`, or a 400 whose message is scrubbed as [`parse_json`]'s are.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::bad_request(&redact::scrub(&rejection.body_text())))
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: a field
/// that is absent stays `None` (unchanged), `null` is `Some(None)` (removed).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `{"success": true, "data": ...}`.
#[derive(Serialize, ToSchema)]
pub struct Success<T> {
    /// Always true.
    pub success: bool,
    /// The answer.
    pub data: T,
}

/// `{"success": true, "data": [...], "next_cursor": ...}`: one page of a list.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    /// Always true.
    pub success: bool,
    /// This page, oldest first.
    pub data: Vec<T>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `{"success": false, "error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct Failure {
    /// Always false.
    pub success: bool,
    /// What went wrong.
    pub error: ErrorDoc,
}

/// An error's code and message. The message never holds a key or a secret.
#[derive(Serialize, ToSchema)]
pub struct ErrorDoc {
    /// `UNAUTHORIZED`, `ADMIN_REQUIRED`, `INSUFFICIENT_PERMISSIONS`, `BAD_REQUEST`,
    /// `INVALID_INPUT`, `NOT_FOUND`, `CONFLICT`, `METHOD_NOT_ALLOWED`, `PAYLOAD_TOO_LARGE`,
    /// `UNSUPPORTED_MEDIA_TYPE`, `NO_MASTER_KEY`, `REQUEST_TIMEOUT`, `TIMEOUT`,
    /// `STORE_ERROR`, `INTERNAL_ERROR`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `{"success": true, "data": data}` with a status, never cached (it may hold a key).
pub fn success<T: Serialize>(status: StatusCode, data: T) -> Response {
    no_store((status, Json(Success { success: true, data })).into_response())
}

/// One page of a list, never cached.
pub fn page<T: Serialize>(data: Vec<T>, next_cursor: Option<String>) -> Response {
    let body = Page {
        success: true,
        data,
        next_cursor,
    };
    no_store((StatusCode::OK, Json(body)).into_response())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `{"success": false, "error": {"code", "message"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }

    /// 400 `BAD_REQUEST`: a request the API cannot read (not the store's verdict on input,
    /// which is `INVALID_INPUT`).
    pub fn bad_request(message: &str) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Failure {
            success: false,
            error: ErrorDoc {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        no_store((self.status, Json(body)).into_response())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::Input(_) | Error::Vault(VaultError::Input(_)) => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            Error::State(
                StateError::UnknownKey(_)
                | StateError::UnknownPlan(_)
                | StateError::UnknownRole(_)
                | StateError::UnknownUser(_)
                | StateError::UnknownSecret(_)
                | StateError::UnknownWebhook(_)
                | StateError::UnknownOwner(_),
            ) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Error::State(StateError::AdminRequired(_)) => (StatusCode::FORBIDDEN, "ADMIN_REQUIRED"),
            Error::State(_)
            | Error::Vault(
                VaultError::DuplicateMasterKey(_)
                | VaultError::WouldRetireCurrent { .. }
                | VaultError::VersionsExhausted(_)
                | VaultError::UnknownMasterKey { .. }
                | VaultError::RetiredMasterKey { .. },
            ) => (StatusCode::CONFLICT, "CONFLICT"),
            // A fleet host past its staleness bound, or a change the fleet did not take:
            // this host cannot answer now; another (or a retry) may.
            Error::Stale => (StatusCode::SERVICE_UNAVAILABLE, "STALE"),
            Error::NotCommitted(_) => (StatusCode::SERVICE_UNAVAILABLE, "NOT_COMMITTED"),
            // Configuration the sidecar was started without: CREDSTORE_MASTER_KEY.
            Error::Vault(VaultError::NoMasterKey) => (StatusCode::SERVICE_UNAVAILABLE, "NO_MASTER_KEY"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "STORE_ERROR"),
        };
        ApiError::new(status, code, &e.to_string())
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        ApiError::from(Error::from(e))
    }
}
