//! The management API's vault: provider secrets (`credstore vault put | get | list | delete
//! | rotate-master`), for admin keys. Listing, putting and deleting need an admin key;
//! reading a secret's value needs an admin key that also holds the permission `vault:read`
//! of its own ([`Admin::VAULT_READ`]), so a sidecar's ordinary admin keys manage secrets
//! without being able to read them back. The vault's operations other than listing need
//! the master key (`CREDSTORE_MASTER_KEY`); without it they answer 503 `NO_MASTER_KEY`.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use credstore::vault::MasterKey;
use credstore::{Secret, StateError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{
    Admin, ApiError, Failure, Shared, Success, blocking, parse_json, parse_optional_json, query, success,
};
use crate::output::docs::{SecretDoc, StoredSecretDoc};

/// Which project a secret is in.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectQuery {
    /// The project (default `default`; for a list: every project).
    project: Option<String>,
}

/// Which secret version to read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// The project (default `default`).
    project: Option<String>,
    /// A version (default: the latest).
    version: Option<u32>,
}

/// Every stored secret version, never a value (`credstore vault list --json`).
#[utoipa::path(get, path = "/v1/vault/secrets", tag = "vault", params(ProjectQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every secret version (of one project, or all)", body = Success<Vec<SecretDoc>>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
    ))]
pub async fn list_secrets(
    _admin: Admin,
    State(store): State<Shared>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let project = query(q)?.project;
    let list = blocking(&store, move |s| s.vault_list(project.as_deref())).await?;
    let docs: Vec<SecretDoc> = list.iter().map(SecretDoc::from).collect();
    Ok(success(StatusCode::OK, docs))
}

/// `PUT /v1/vault/secrets/{name}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The secret's value. Never logged, never in an answer but a `vault:read` one.
    #[serde(deserialize_with = "secret")]
    #[schema(value_type = String)]
    secret: Secret,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

/// Stores a new version of a secret (`credstore vault put --json`); rotating a provider
/// key is a put.
#[utoipa::path(put, path = "/v1/vault/secrets/{name}", tag = "vault", request_body = PutBody,
    params(("name" = String, Path, description = "The secret's name"), ProjectQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The version stored", body = Success<StoredSecretDoc>),
        (status = 400, description = "Bad input; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 503, description = "The sidecar has no master key", body = Failure),
    ))]
pub async fn put_secret(
    admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let project = query(q)?.project;
    let body: PutBody = parse_json(&body)?;
    let key = admin.key;
    let info = blocking(&store, move |s| {
        s.vault_put_as(key.expose(), project.as_deref(), &name, body.secret.expose().as_bytes())
    })
    .await?;
    Ok(success(StatusCode::OK, StoredSecretDoc::from(&info)))
}

/// A secret's value, as only a `vault:read` admin key is answered.
#[derive(Serialize, ToSchema)]
pub struct SecretValueDoc {
    /// Its project.
    project: String,
    /// Its name.
    name: String,
    /// The version read.
    version: u32,
    /// The value.
    secret: String,
}

/// Reads a secret's value (`credstore vault get`): only for an admin key with the
/// permission `vault:read` of its own. The read is recorded in the audit log (`vault.read`,
/// without the value).
#[utoipa::path(get, path = "/v1/vault/secrets/{name}", tag = "vault",
    params(("name" = String, Path, description = "The secret's name"), ReadQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The value", body = Success<SecretValueDoc>),
        (status = 400, body = Failure), (status = 401, body = Failure),
        (status = 403, description = "Not an admin key, or one without vault:read of its own", body = Failure),
        (status = 404, description = "No such secret or version", body = Failure),
        (status = 503, description = "The sidecar has no master key", body = Failure),
    ))]
pub async fn read_secret(
    admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    admin.require_own(Admin::VAULT_READ)?;
    let q = query(q)?;
    let doc = blocking(&store, move |s| {
        let project = q.project.as_deref().unwrap_or(credstore::record::DEFAULT_PROJECT);
        // The version to read, named in the answer: the latest unless one was asked for.
        let version = match q.version {
            Some(v) => v,
            None => s
                .vault_list(Some(project))?
                .iter()
                .filter(|info| info.name == name)
                .map(|info| info.version)
                .max()
                .ok_or_else(|| StateError::UnknownSecret(format!("{project}/{name}")))?,
        };
        let value = s.vault_get(Some(project), &name, Some(version))?;
        Ok(SecretValueDoc {
            project: project.to_string(),
            name,
            version,
            secret: value.expose().to_string(),
        })
    })
    .await?;
    Ok(success(StatusCode::OK, doc))
}

/// What a secret's delete answers.
#[derive(Serialize, ToSchema)]
pub struct DeletedSecret {
    /// Its project.
    project: String,
    /// Its name: every version of it is gone from the index (the sealed blobs stay in the
    /// append-only log).
    deleted: String,
}

/// Deletes every version of a secret (`credstore vault delete`).
#[utoipa::path(delete, path = "/v1/vault/secrets/{name}", tag = "vault",
    params(("name" = String, Path, description = "The secret's name"), ProjectQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success<DeletedSecret>),
        (status = 400, body = Failure), (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 404, description = "No such secret", body = Failure),
    ))]
pub async fn delete_secret(
    _admin: Admin,
    State(store): State<Shared>,
    Path(name): Path<String>,
    q: Result<Query<ProjectQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let project = query(q)?
        .project
        .unwrap_or_else(|| credstore::record::DEFAULT_PROJECT.to_string());
    let (p, n) = (project.clone(), name.clone());
    blocking(&store, move |s| s.vault_delete(Some(&p), &n)).await?;
    Ok(success(StatusCode::OK, DeletedSecret { project, deleted: name }))
}

/// `POST /v1/vault/rotate-master`: the new master key, or `generate`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateMasterBody {
    /// The new master key, 64 hex characters; or give `generate`.
    #[serde(default, deserialize_with = "optional_secret")]
    #[schema(value_type = Option<String>)]
    master_key: Option<Secret>,
    /// Generate the new master key; the answer holds it, once.
    #[serde(default)]
    generate: bool,
    /// Then retire the older master keys (they may no longer decrypt).
    #[serde(default)]
    retire_old: bool,
}

fn optional_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    <Option<String>>::deserialize(d).map(|s| s.map(Secret::new))
}

/// What a master-key rotation did.
#[derive(Serialize, ToSchema)]
pub struct RotatedMaster {
    /// The new current master key version.
    master_version: u32,
    /// Secret versions whose data keys were rewrapped under it (none was decrypted).
    rewrapped: usize,
    /// Versions below this one are retired, when `retire_old` was asked.
    retired_below: Option<u32>,
    /// A generated key only, shown this once as `VERSION:HEX`: add it to
    /// CREDSTORE_MASTER_KEY before the sidecar next starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    master_key: Option<String>,
}

/// Adds a new master key version and rewraps every data key under it, without decrypting
/// a secret (`credstore vault rotate-master`). The sidecar holds the new key from then on;
/// CREDSTORE_MASTER_KEY must hold it (`VERSION:HEX,...`) before the next start.
#[utoipa::path(post, path = "/v1/vault/rotate-master", tag = "vault", request_body = RotateMasterBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Rotated", body = Success<RotatedMaster>),
        (status = 400, description = "No key, or not 64 hex characters; nothing was written", body = Failure),
        (status = 401, body = Failure), (status = 403, body = Failure),
        (status = 409, description = "Secrets still under a master key being retired", body = Failure),
        (status = 503, description = "The sidecar has no master key for the secrets already sealed", body = Failure),
    ))]
pub async fn rotate_master(_admin: Admin, State(store): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let body: RotateMasterBody = parse_optional_json(&body)?;
    if body.generate == body.master_key.is_some() {
        return Err(ApiError::bad_request(
            "give master_key (64 hex characters) or generate: true, one of them",
        ));
    }
    let rotated = blocking(&store, move |s| {
        let version = s.vault_master_version().unwrap_or(0) + 1;
        let (key, shown) = match &body.master_key {
            Some(hex) => (MasterKey::from_hex(version, hex.expose())?, None),
            None => {
                let key = MasterKey::random(version)?;
                let shown = format!("{version}:{}", key.to_hex().as_str());
                (key, Some(shown))
            }
        };
        let rewrapped = s.vault_rotate_master(key, |_, _| {})?;
        let retired_below = if body.retire_old {
            s.vault_retire_below(version)?;
            Some(version)
        } else {
            None
        };
        Ok(RotatedMaster {
            master_version: version,
            rewrapped,
            retired_below,
            master_key: shown,
        })
    })
    .await?;
    Ok(success(StatusCode::OK, rotated))
}
