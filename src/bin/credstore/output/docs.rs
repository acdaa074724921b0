//! The JSON documents the CLI prints with `--json` and `credstore serve` answers, as
//! types: one definition of each shape, serialised by both, and (with the `http` feature)
//! described by `utoipa::ToSchema` for the sidecar's `GET /openapi.json`.
//!
//! Each document is built from the library's values by a `from` function here; its fields
//! are plain JSON types (strings, numbers, lists, maps), so what the schema says is what
//! serde writes.

use std::collections::BTreeMap;

use credstore::SecretInfo;
use credstore::clock::fmt_time;
use credstore::policy::{Role, User};
use credstore::record::KeyKind;
use credstore::webhook::Webhook;
use credstore::{
    Budget, BudgetState, CreatedKey, Decision, Event, KeyInfo, KeyRecord, Owner, Plan, RateLimit, Rotated,
};
use serde::Serialize;
use serde_json::Value;

/// A key's public fields (`show --json`, `list --json`, and every management answer about
/// one key). Never the key itself.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct KeyDoc {
    /// The key's id (`key_` and 22 base62 characters); ids sort by creation.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What may be shown of the key: its prefix and four random characters.
    pub start: String,
    /// `live` or `test`.
    pub env: String,
    /// Its project.
    pub project: String,
    /// `active`, `disabled`, `expired` or `revoked`, now.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null: never used.
    pub last_used_at: Option<String>,
    /// RFC 3339; null: never expires.
    pub expires_at: Option<String>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339: when the key stops (stopped) working; null unless revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The key this one replaced in a rotation.
    pub rotated_from: Option<String>,
    /// The key that replaced this one in a rotation.
    pub rotated_to: Option<String>,
    /// The key's own rate limits (a plan's apply when it has none).
    pub rate_limits: Vec<RateLimitDoc>,
    /// The key's own budget.
    pub budget: Option<BudgetDoc>,
    /// The plan it follows.
    pub plan: Option<String>,
    /// `service` (a service account) or `personal` (acts with its user's role).
    #[serde(rename = "type")]
    pub key_type: String,
    /// A personal token's user.
    pub user: Option<String>,
    /// A service account's role.
    pub role: Option<String>,
    /// Permissions beyond the role, `resource:action`.
    pub permissions: Vec<String>,
    /// Allowed client addresses or CIDR ranges (empty: any).
    pub allow_ips: Vec<String>,
    /// Allowed referrer host patterns (empty: any).
    pub allow_referrers: Vec<String>,
    /// Allowed endpoints, `METHOD GLOB` (empty: any).
    pub allow_endpoints: Vec<String>,
    /// The id of the owner the key belongs to; null: none.
    pub owner: Option<String>,
}

impl KeyDoc {
    /// `info` as the document shows it.
    pub fn from(info: &KeyInfo) -> KeyDoc {
        let r = &info.record;
        KeyDoc {
            id: r.id.to_string(),
            name: r.name.clone(),
            start: r.start.clone(),
            env: r.env().as_str().to_string(),
            project: r.project.clone(),
            status: info.status.label().to_lowercase(),
            created_at: fmt_time(r.created_at),
            last_used_at: info.last_used_at.map(fmt_time),
            expires_at: r.expires_at.map(fmt_time),
            metadata: r.metadata.clone(),
            revoked_at: r.revoked.as_ref().map(|v| fmt_time(v.at)),
            revoke_reason: r.revoked.as_ref().and_then(|v| v.reason.clone()),
            rotated_from: r.rotated_from.as_ref().map(ToString::to_string),
            rotated_to: r.rotated_to.as_ref().map(ToString::to_string),
            rate_limits: r.rate_limits.iter().map(RateLimitDoc::from).collect(),
            budget: r.budget.as_ref().map(BudgetDoc::from),
            plan: r.plan.clone(),
            key_type: r.kind.as_str().to_string(),
            user: match &r.kind {
                KeyKind::Personal { user } => Some(user.clone()),
                KeyKind::Service => None,
            },
            role: r.role.as_ref().map(|role| role.as_str().to_string()),
            permissions: r
                .permissions
                .permissions()
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            allow_ips: r.allow_ips.sources().to_vec(),
            allow_referrers: r.allow_referrers.sources().to_vec(),
            allow_endpoints: r.allow_endpoints.sources().to_vec(),
            owner: info.owner.clone(),
        }
    }
}

/// A key just issued or rotated (`create --json`, `rotate --json`): the only document that
/// holds the key itself, shown this once.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct CreatedDoc {
    /// The new key's id.
    pub id: String,
    /// The key itself: copy it now, it is never shown again.
    pub key: String,
    /// Its name.
    pub name: String,
    /// Its prefix and four random characters.
    pub start: String,
    /// `live` or `test`.
    pub env: String,
    /// Its project.
    pub project: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null: never expires.
    pub expires_at: Option<String>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// A rotation only: the id of the key this one replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// A rotation only: when the old key stops working (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_revoked_at: Option<String>,
    /// A rotation only, when the grace asked for was below the lifecycle policy's min
    /// grace: the grace given instead (`1h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_raised_to: Option<String>,
}

impl CreatedDoc {
    /// `created`, which replaced `replaced` when it comes from a rotation.
    pub fn from(created: &CreatedKey, replaced: Option<&KeyRecord>) -> CreatedDoc {
        let r = &created.record;
        CreatedDoc {
            id: r.id.to_string(),
            key: created.key.expose().to_string(),
            name: r.name.clone(),
            start: r.start.clone(),
            env: r.env().as_str().to_string(),
            project: r.project.clone(),
            created_at: fmt_time(r.created_at),
            expires_at: r.expires_at.map(fmt_time),
            metadata: r.metadata.clone(),
            replaces: replaced.map(|old| old.id.to_string()),
            old_revoked_at: replaced.and_then(|old| old.revoked.as_ref().map(|v| fmt_time(v.at))),
            grace_raised_to: None,
        }
    }

    /// A rotation's document, saying when its grace was raised to the min grace.
    pub fn rotated(rotated: &Rotated) -> CreatedDoc {
        CreatedDoc {
            grace_raised_to: rotated
                .grace_raised_to
                .map(|g| credstore::lifecycle::fmt_duration(i64::try_from(g.as_millis()).unwrap_or(i64::MAX))),
            ..CreatedDoc::from(&rotated.new, Some(&rotated.old))
        }
    }
}

/// A rate limit as it is set: `limit` requests per `window_ms`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct RateLimitDoc {
    /// Its name (the window's text by default: `1m`).
    pub name: String,
    /// Requests per window; also the burst.
    pub limit: u32,
    /// The window, milliseconds.
    pub window_ms: u64,
}

impl RateLimitDoc {
    /// `limit` as the document shows it.
    pub fn from(limit: &RateLimit) -> RateLimitDoc {
        RateLimitDoc {
            name: limit.name.clone(),
            limit: limit.limit,
            window_ms: limit.window_ms,
        }
    }
}

/// A budget as it is set: a cap per period.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct BudgetDoc {
    /// The cap, in cost units per period.
    pub cap: u64,
    /// `monthly`, `daily` or `total`.
    pub period: String,
    /// The day of the month a monthly period starts; null for other periods.
    pub anchor_day: Option<u8>,
}

impl BudgetDoc {
    /// `budget` as the document shows it ([`Budget::to_json`]'s shape).
    pub fn from(budget: &Budget) -> BudgetDoc {
        BudgetDoc {
            cap: budget.cap,
            period: budget.period.name().to_string(),
            anchor_day: budget.period.anchor_day(),
        }
    }
}

/// A plan (`plan list --json`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct PlanDoc {
    /// Its name.
    pub name: String,
    /// The rate limits keys on it follow.
    pub rate_limits: Vec<RateLimitDoc>,
    /// The budget keys on it follow.
    pub budget: Option<BudgetDoc>,
}

impl PlanDoc {
    /// `plan` as the document shows it.
    pub fn from(plan: &Plan) -> PlanDoc {
        PlanDoc {
            name: plan.name.clone(),
            rate_limits: plan.rate_limits.iter().map(RateLimitDoc::from).collect(),
            budget: plan.budget.as_ref().map(BudgetDoc::from),
        }
    }
}

/// An owner (`owner list --json`, `owner show --json`, the sidecar's `/v1/owners`): a
/// customer, team or tenant whose limits and budget all its keys share.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct OwnerDoc {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Free-form metadata, shown in every decision of its keys.
    pub metadata: BTreeMap<String, String>,
    /// Rate limits its keys share, on top of their own.
    pub rate_limits: Vec<RateLimitDoc>,
    /// The budget its keys share, on top of their own.
    pub budget: Option<BudgetDoc>,
    /// The budget this period: cap in force, spent, left (`owner show` and the sidecar's
    /// `GET /v1/owners/{id}`; null in lists, or without a budget).
    pub budget_state: Option<BudgetStateDoc>,
}

impl OwnerDoc {
    /// `owner` as the document shows it, with its budget's state when given.
    pub fn from(owner: &Owner, state: Option<&BudgetState>) -> OwnerDoc {
        OwnerDoc {
            id: owner.id.clone(),
            name: owner.name.clone(),
            metadata: owner.metadata.clone(),
            rate_limits: owner.rate_limits.iter().map(RateLimitDoc::from).collect(),
            budget: owner.budget.as_ref().map(BudgetDoc::from),
            budget_state: state.map(BudgetStateDoc::from),
        }
    }
}

/// The owner of a verified key, as its decision names it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct DecisionOwnerDoc {
    /// The owner's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// The owner's budget after this request (null: none, or not reached).
    pub budget: Option<BudgetStateDoc>,
}

/// The keys an operation on an owner's keys changed (`owner revoke-keys`,
/// `owner disable-keys`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct OwnerKeysDoc {
    /// The owner's id.
    pub owner: String,
    /// The ids of the keys revoked (or disabled), in creation order.
    pub key_ids: Vec<String>,
}

/// A role (`role list --json`): built-in (`admin`, `member`, `viewer`) or the store's own.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct RoleDoc {
    /// Its name.
    pub name: String,
    /// What it grants, `resource:action` (`*` for any segment).
    pub permissions: Vec<String>,
}

impl RoleDoc {
    /// `role` as the document shows it.
    pub fn from(role: &Role) -> RoleDoc {
        RoleDoc {
            name: role.name().as_str().to_string(),
            permissions: role
                .permissions()
                .permissions()
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        }
    }
}

/// A user, the owner of personal tokens (`user list --json`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct UserDoc {
    /// The user's id.
    pub id: String,
    /// Project → the user's role there.
    pub memberships: BTreeMap<String, String>,
}

impl UserDoc {
    /// `user` as the document shows it.
    pub fn from(user: &User) -> UserDoc {
        UserDoc {
            id: user.id.clone(),
            memberships: user
                .memberships
                .iter()
                .map(|(project, role)| (project.clone(), role.as_str().to_string()))
                .collect(),
        }
    }
}

/// A stored version of a provider secret (`vault list --json`): never its value.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct SecretDoc {
    /// Its project.
    pub project: String,
    /// Its name.
    pub name: String,
    /// The version (1, 2, ...).
    pub version: u32,
    /// RFC 3339.
    pub created_at: String,
    /// The master key version its data key is wrapped under.
    pub master_version: u32,
}

impl SecretDoc {
    /// `info` as the document shows it.
    pub fn from(info: &SecretInfo) -> SecretDoc {
        SecretDoc {
            project: info.project.clone(),
            name: info.name.clone(),
            version: info.version,
            created_at: fmt_time(info.created_at),
            master_version: info.master_version,
        }
    }
}

/// A secret version just stored (`vault put --json`): never its value.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct StoredSecretDoc {
    /// Its project.
    pub project: String,
    /// Its name.
    pub name: String,
    /// The version this put made.
    pub version: u32,
    /// The master key version its data key is wrapped under.
    pub master_version: u32,
}

impl StoredSecretDoc {
    /// `info` as the document shows it.
    pub fn from(info: &SecretInfo) -> StoredSecretDoc {
        StoredSecretDoc {
            project: info.project.clone(),
            name: info.name.clone(),
            version: info.version,
            master_version: info.master_version,
        }
    }
}

/// A registered webhook (`webhook list --json`, `GET /v1/webhooks`). Never its secret.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct WebhookDoc {
    /// Its id (`wh_` and 16 hex digits).
    pub id: String,
    /// Where deliveries go (secret-shaped tokens in it scrubbed).
    pub url: String,
    /// The event kinds delivered (`*`: all but `webhook.*`).
    pub events: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Every matching event up to this log record was delivered.
    pub delivered_seq: u64,
    /// Failed attempts at the next event so far (0 after a delivery).
    pub failed_attempts: u32,
}

impl WebhookDoc {
    /// The document of a webhook.
    pub fn from(webhook: &Webhook) -> WebhookDoc {
        WebhookDoc {
            id: webhook.id.to_string(),
            url: credstore::redact::scrub(&webhook.url).into_owned(),
            events: webhook.kinds.as_slice().to_vec(),
            created_at: fmt_time(webhook.created_at),
            delivered_seq: webhook.delivered.seq,
            failed_attempts: webhook.failed_attempts,
        }
    }
}

/// A webhook just added (`webhook add --json`, `POST /v1/webhooks`): the webhook and its
/// signing secret, shown this once.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct AddedWebhookDoc {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookDoc,
    /// The signing secret, `whsec_` + base64: verify `webhook-signature` with it. Shown
    /// once.
    pub secret: String,
}

/// One event of the audit log (`audit --json`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct EventDoc {
    /// The log record's sequence number.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// `key.created`, `key.revoked`, `plan.set`, `vault.put`, ...
    pub kind: String,
    /// What the event records; its fields depend on the kind. Never a key or a secret.
    #[cfg_attr(feature = "http", schema(value_type = Object))]
    pub details: Value,
}

impl EventDoc {
    /// The event in record `seq`, as the document shows it.
    pub fn from(seq: u64, event: &Event) -> EventDoc {
        let mut whole = event.to_json(seq);
        let details = whole.get_mut("details").map(Value::take).unwrap_or(Value::Null);
        EventDoc {
            seq,
            at: fmt_time(event.at),
            kind: event.kind_name().to_string(),
            details,
        }
    }
}

/// A verification's decision (`verify --json`, `POST /v1/keys.verify`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct DecisionDoc {
    /// Whether the key may make the request.
    pub valid: bool,
    /// `VALID`, `MALFORMED`, `NOT_FOUND`, `REVOKED`, `DISABLED`, `EXPIRED`, `FORBIDDEN`,
    /// `INSUFFICIENT_PERMISSIONS`, `RATE_LIMITED` or `BUDGET_EXHAUSTED`.
    pub code: String,
    /// The HTTP status the decision maps to (200, 401, 402, 403, 429).
    pub status: u16,
    /// Why a key is malformed, or how a rate limit refused.
    pub reason: Option<String>,
    /// The key's id, once it was found.
    pub key_id: Option<String>,
    /// The key's name.
    pub name: Option<String>,
    /// The key's project.
    pub project: Option<String>,
    /// The key's environment.
    pub env: Option<String>,
    /// The key's metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The role the key acted with.
    pub role: Option<String>,
    /// The restriction that refused a `FORBIDDEN` request (`ip`, `referrer`, `endpoint`,
    /// `project`, `environment`, `user_removed`, `not_a_member`, `admin_key`).
    pub forbidden: Option<String>,
    /// The state of each rate limit that applies.
    pub ratelimits: Vec<RateLimitStateDoc>,
    /// The state of the budget that applies.
    pub budget: Option<BudgetStateDoc>,
    /// `exhausted` or `over_capacity` for a rate-limited request.
    pub rate_limited: Option<String>,
    /// Seconds until a rate-limited request may pass.
    pub retry_after: Option<u64>,
    /// The key's owner, whose limits (named `owner:...` among `ratelimits`) and budget
    /// apply on top of the key's own; null: the key has none.
    pub owner: Option<DecisionOwnerDoc>,
}

impl DecisionDoc {
    /// `decision` as the document shows it.
    pub fn from(decision: &Decision) -> DecisionDoc {
        let key = decision.key.as_deref();
        DecisionDoc {
            valid: decision.is_valid(),
            code: decision.code.as_str().to_string(),
            status: decision.http_status(),
            reason: decision
                .malformed
                .map(|m| m.to_string())
                .or_else(|| decision.rate_limited.map(|r| r.to_string())),
            key_id: key.map(|k| k.id.to_string()),
            name: key.map(|k| k.name.clone()),
            project: key.map(|k| k.project.clone()),
            env: key.map(|k| k.env().as_str().to_string()),
            metadata: key.map(|k| k.metadata.clone()),
            role: decision.role.as_ref().map(|r| r.as_str().to_string()),
            forbidden: decision.forbidden.map(|f| f.as_str().to_string()),
            ratelimits: decision
                .ratelimits
                .iter()
                .map(|l| RateLimitStateDoc {
                    name: l.name.to_string(),
                    limit: l.limit,
                    window_ms: l.window_ms,
                    remaining: l.remaining,
                    reset: fmt_time(secs_to_ms(l.reset)),
                    retry_after: l.retry_after,
                    over_capacity: l.over_capacity,
                })
                .collect(),
            budget: decision.budget.as_ref().map(BudgetStateDoc::from),
            rate_limited: decision.rate_limited.map(|r| r.as_str().to_string()),
            retry_after: decision.retry_after,
            owner: decision.owner.as_ref().map(|o| DecisionOwnerDoc {
                id: o.id.clone(),
                name: o.name.clone(),
                metadata: o.metadata.clone(),
                budget: decision.owner_budget.as_ref().map(BudgetStateDoc::from),
            }),
        }
    }
}

/// A rate limit's state after a verification.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct RateLimitStateDoc {
    /// The limit's name.
    pub name: String,
    /// Requests per window.
    pub limit: u32,
    /// The window, milliseconds.
    pub window_ms: u64,
    /// Requests left now.
    pub remaining: u32,
    /// When the limit is whole again (RFC 3339, whole seconds).
    pub reset: String,
    /// Seconds until a request of this weight may pass, when this limit refused it.
    pub retry_after: Option<u64>,
    /// The request's weight is over the limit's capacity: it can never pass.
    pub over_capacity: bool,
}

/// A budget's state after a verification.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct BudgetStateDoc {
    /// The cap.
    pub cap: u64,
    /// Spent this period.
    pub spent: u64,
    /// Left this period.
    pub remaining: u64,
    /// When the period ends (RFC 3339); null for a total budget.
    pub period_end: Option<String>,
    /// Whether this verification was charged.
    pub charged: bool,
}

impl BudgetStateDoc {
    /// `state` as the document shows it.
    pub fn from(state: &BudgetState) -> BudgetStateDoc {
        BudgetStateDoc {
            cap: state.cap,
            spent: state.spent,
            remaining: state.remaining,
            period_end: state.period_end.map(fmt_time),
            charged: state.charged,
        }
    }
}

/// Unix seconds as milliseconds, saturating (as the library serialises `reset`).
fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or(i64::MAX)
}

/// What an import did (`credstore import --json`, `POST /v1/api-keys/import`).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct ImportedDoc {
    /// How many keys were imported.
    pub imported: usize,
    /// Each key, in the order of the lines.
    pub keys: Vec<ImportedKeyDoc>,
}

/// One imported key.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct ImportedKeyDoc {
    /// The line it came from (from 1).
    pub line: usize,
    /// Its id in this store.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its prefix (its start until it is first used).
    pub prefix: String,
    /// `live` or `test`.
    pub env: String,
    /// Its project.
    pub project: String,
}

impl ImportedDoc {
    /// The records an import returned, with the lines they came from.
    pub fn from(records: &[KeyRecord], lines: &[usize]) -> ImportedDoc {
        let keys = records
            .iter()
            .zip(lines)
            .map(|(r, line)| ImportedKeyDoc {
                line: *line,
                id: r.id.to_string(),
                name: r.name.clone(),
                prefix: r.prefix().to_string(),
                env: r.env().to_string(),
                project: r.project.clone(),
            })
            .collect();
        ImportedDoc {
            imported: records.len(),
            keys,
        }
    }
}
