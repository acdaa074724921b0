//! Planning: a requested change ([`Op`]) checked against the state it will change
//! (the index plus this batch's earlier changes, an [`Overlay`]) and turned into the
//! events that carry it out. Nothing here writes: the commit loop appends the events,
//! applies them to the overlay, and only then reads the outcome back.

use crate::error::{InputError, Result, StateError};
use crate::event::{Event, EventKind, KeyChanges};
use crate::policy::{ADMIN_ROLE, BUILTIN_ROLES};
use crate::record::{KeyId, KeyKind, KeyRecord, LATEST_EXPIRY_MS};
use crate::secret::Secret;
use crate::token::{ADMIN_PREFIX, Format};
use crate::vault::VaultError;

use super::Shared;
use super::commit::{Notice, Op, Outcome};
use super::state_machine::{NOTICE_EXPIRED, NOTICE_EXPIRING, NOTICE_UNUSED, Overlay};

/// What a planned request will return, read back from the state once its events apply.
pub(super) enum Planned {
    Created(KeyId, Secret),
    Changed(KeyId),
    Rotated(KeyId, KeyId, Secret),
    Done,
    Count(u32),
    Credited(super::Credit),
    Owner(crate::owner::Owner),
    Keys(Vec<KeyId>),
    Imported(Vec<KeyId>),
    At(i64),
    Session(crate::dashboard::Session),
}

impl Planned {
    /// What the request returns, read from the state after its events applied.
    pub(super) fn into_outcome(self, state: &Overlay<'_>) -> Result<Outcome> {
        let record = |id: &KeyId| -> Result<KeyRecord> {
            state
                .get(id)?
                .map(|k| k.record)
                .ok_or_else(|| StateError::UnknownKey(id.to_string()).into())
        };
        Ok(match self {
            Self::Created(id, secret) => Outcome::Created(record(&id)?, secret),
            Self::Changed(id) => Outcome::Changed(record(&id)?),
            Self::Rotated(old, new, secret) => Outcome::Rotated {
                old: Box::new(record(&old)?),
                new: Box::new(record(&new)?),
                secret,
            },
            Self::Done => Outcome::Done,
            Self::Count(n) => Outcome::Count(n),
            Self::Credited(c) => Outcome::Credited(c),
            Self::Owner(o) => Outcome::Owner(Box::new(o)),
            Self::Keys(ids) => Outcome::Keys(ids),
            Self::Imported(ids) => Outcome::Imported(ids.iter().map(record).collect::<Result<_>>()?),
            Self::At(at) => Outcome::At(at),
            Self::Session(s) => Outcome::Session(Box::new(s)),
        })
    }
}

/// Checks `op` against the current state and returns the events that carry it out.
pub(super) fn plan(
    state: &Overlay<'_>,
    op: &Op,
    now: i64,
    last_id: &mut u128,
    shared: &Shared,
) -> Result<(Vec<Event>, Planned)> {
    let event = |kind| Event { at: now, kind };
    match op {
        Op::Create(key) => {
            let mut events = register_format(state, &key.format, now)?;
            let new = &key.new;
            let expires_at = new.expires.map(|e| e.resolve(now)).transpose()?;
            let id = KeyId::next(now, last_id);
            let mut record = new_record(new, id, key.start.clone(), &key.format, &key.project, now, expires_at);
            let policy = state.lifecycle().for_record(&record);
            record.expires_at = within_max_lifetime(record.expires_at, record.created_at, &policy, now)?;
            if let Some(plan) = &record.plan {
                state.plan(plan)?;
            }
            if let Some(role) = &record.role {
                state.role(role.as_str())?;
            }
            // A personal token acts with its user's role in its project: one for a user
            // without a role there would be refused at every verify.
            if let KeyKind::Personal { user } = &record.kind
                && state.user(user)?.role_in(&record.project).is_none()
            {
                return Err(StateError::NotAMember {
                    user: user.clone(),
                    project: record.project.clone(),
                }
                .into());
            }
            if let Some(owner) = &new.owner {
                state.owner(owner)?;
            }
            let planned = Planned::Created(record.id.clone(), key.secret.clone());
            let id = record.id.clone();
            events.push(event(EventKind::KeyCreated { record, tag: key.tag }));
            // In the same commit as the key: a key never exists without its owner.
            if let Some(owner) = &new.owner {
                events.push(event(EventKind::KeyOwned {
                    id,
                    owner: owner.clone(),
                }));
            }
            Ok((events, planned))
        }
        Op::Update { id, changes, expires } => {
            let current = state.live(id, now)?;
            if let Some(Some(plan)) = &changes.plan {
                state.plan(plan)?;
            }
            if let Some(role) = &changes.role {
                if matches!(current.record.kind, KeyKind::Personal { .. }) {
                    return Err(InputError::KeyType(
                        "a personal token acts with its user's role; it takes none".into(),
                    )
                    .into());
                }
                state.role(role.as_str())?;
                // Admin keys are issued as such, in their own format (`create`): a key in a
                // customer format does not become one.
                if role.as_str() == ADMIN_ROLE && !current.record.format.is_admin() {
                    return Err(InputError::KeyType(format!(
                        "the admin role makes an admin key, issued with the {ADMIN_PREFIX} prefix: create one instead"
                    ))
                    .into());
                }
            }
            let expires_at = match expires {
                Some(Some(e)) => Some(Some(e.resolve(now)?)),
                Some(None) => Some(None),
                None => None,
            };
            // A new expiry, or none, is held to the key's max lifetime: asking for none
            // under one gives the latest the policy allows.
            let expires_at = match expires_at {
                Some(asked) => {
                    let policy = state.lifecycle().for_record(&current.record);
                    Some(within_max_lifetime(asked, current.record.created_at, &policy, now)?)
                }
                None => None,
            };
            let kind = EventKind::KeyUpdated {
                id: id.clone(),
                changes: KeyChanges {
                    expires_at,
                    ..changes.clone()
                },
            };
            Ok((vec![event(kind)], Planned::Changed(id.clone())))
        }
        Op::SetPlan(plan) => Ok((vec![event(EventKind::PlanSet { plan: plan.clone() })], Planned::Done)),
        Op::SetRole(role) => {
            if BUILTIN_ROLES.contains(&role.name().as_str()) {
                return Err(StateError::RoleInUse(role.name().to_string(), "it is built in".into()).into());
            }
            Ok((vec![event(EventKind::RoleSet { role: role.clone() })], Planned::Done))
        }
        Op::DeleteRole(name) => {
            if BUILTIN_ROLES.contains(&name.as_str()) {
                return Err(StateError::RoleInUse(name.clone(), "it is built in".into()).into());
            }
            state.role(name)?;
            let keys = state.count_keys(|r| r.role.as_ref().is_some_and(|role| role.as_str() == name))?;
            let users = state
                .users()
                .filter(|u| u.memberships.values().any(|r| r.as_str() == name))
                .count();
            if keys + users > 0 {
                let why = format!("{keys} key(s) and {users} user(s) have it");
                return Err(StateError::RoleInUse(name.clone(), why).into());
            }
            Ok((
                vec![event(EventKind::RoleDeleted { name: name.clone() })],
                Planned::Done,
            ))
        }
        Op::VaultPut {
            project,
            name,
            plaintext,
        } => {
            let ring_guard = shared
                .vault_ring
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ring = ring_guard.as_ref().ok_or(VaultError::NoMasterKey)?;
            let mut events = Vec::new();
            let current = ring.current();
            if !state.master_registered(current.version())? {
                events.push(event(EventKind::MasterKeyAdded {
                    version: current.version(),
                    check: current.check_value(),
                }));
            }
            let version = state
                .latest_secret_version(project, name)?
                .map_or(Ok(1), |v| v.checked_add(1).ok_or(VaultError::VersionsExhausted(v)))?;
            let sealed = crate::vault::seal(ring, project, name, version, plaintext)?;
            events.push(event(EventKind::SecretPut {
                project: project.clone(),
                name: name.clone(),
                version,
                sealed,
            }));
            Ok((events, Planned::Count(version)))
        }
        Op::VaultDelete { project, name } => {
            if state.latest_secret_version(project, name)?.is_none() {
                return Err(StateError::UnknownSecret(format!("{project}/{name}")).into());
            }
            let kind = EventKind::SecretDeleted {
                project: project.clone(),
                name: name.clone(),
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultRead { project, name, version } => {
            let kind = EventKind::SecretRead {
                project: project.clone(),
                name: name.clone(),
                version: *version,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultAddMaster { version, check } => {
            if state.master_registered(*version)? {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::MasterKeyAdded {
                version: *version,
                check: *check,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::VaultRewrap(rewraps) => {
            let mut events = Vec::new();
            for r in rewraps {
                // Skip a version deleted or replaced since it was read.
                if state
                    .secret(&r.project, &r.name, r.version)?
                    .is_some_and(|e| e.sealed == r.old)
                {
                    events.push(event(EventKind::SecretRewrapped {
                        project: r.project.clone(),
                        name: r.name.clone(),
                        version: r.version,
                        sealed: r.new.clone(),
                    }));
                }
            }
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            Ok((events, Planned::Count(count)))
        }
        Op::VaultMinVersion(version) => Ok((
            vec![event(EventKind::VaultMinVersion { version: *version })],
            Planned::Done,
        )),
        Op::SetUser(user) => {
            for role in user.memberships.values() {
                state.role(role.as_str())?;
            }
            Ok((vec![event(EventKind::UserSet { user: user.clone() })], Planned::Done))
        }
        Op::RemoveUser(id) => {
            state.user(id)?;
            Ok((vec![event(EventKind::UserRemoved { id: id.clone() })], Planned::Done))
        }
        Op::DeletePlan(name) => {
            state.plan(name)?;
            let users = state.count_keys(|r| r.plan.as_deref() == Some(name))?;
            if users > 0 {
                return Err(StateError::PlanInUse(name.clone(), users).into());
            }
            Ok((
                vec![event(EventKind::PlanDeleted { name: name.clone() })],
                Planned::Done,
            ))
        }
        Op::Credit { id, change, reason } => {
            let stored = state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            let record = &stored.record;
            if let Some(next) = &record.rotated_to {
                return Err(StateError::CreditRotated(id.to_string(), next.to_string()).into());
            }
            let plan = match &record.plan {
                Some(name) => Some(state.plan(name)?),
                None => None,
            };
            let (_, budget) = crate::limits::effective(&record.rate_limits, record.budget, plan.as_ref());
            let budget = budget.ok_or_else(|| StateError::NoBudget(id.to_string()))?;
            let (period, _) = budget.period.at(now);
            let spent = shared.spent(&stored, period);
            let (credit, outcome) = credit_of(budget.cap, spent, state.credit(id, period)?, *change);
            let kind = EventKind::BudgetCredited {
                id: id.clone(),
                period,
                credit,
                change: *change,
                reason: reason.clone(),
            };
            Ok((vec![event(kind)], Planned::Credited(outcome)))
        }
        Op::SetOwner { id, update } => {
            let owner = update.apply(id, state.owner_if_any(id)?);
            let planned = Planned::Owner(owner.clone());
            Ok((vec![event(EventKind::OwnerSet { owner })], planned))
        }
        Op::OwnerKeys { owner, revoke, reason } => {
            state.owner(owner)?;
            let mut ids = Vec::new();
            for id in state.keys_of_owner(owner)? {
                let Some(stored) = state.get(&id)? else { continue };
                // Revoke: every key not revoked yet; disable: those not disabled either.
                let live = stored.record.status_at(now) != crate::record::Status::Revoked;
                if live && (*revoke || stored.record.disabled_at.is_none()) {
                    ids.push(id);
                }
            }
            if ids.is_empty() {
                return Ok((vec![], Planned::Keys(ids)));
            }
            let kind = if *revoke {
                EventKind::OwnerKeysRevoked {
                    owner: owner.clone(),
                    ids: ids.clone(),
                    reason: reason.clone(),
                }
            } else {
                EventKind::OwnerKeysDisabled {
                    owner: owner.clone(),
                    ids: ids.clone(),
                }
            };
            Ok((vec![event(kind)], Planned::Keys(ids)))
        }
        Op::OwnerCredit { owner, change, reason } => {
            let budget = state
                .owner(owner)?
                .budget
                .ok_or_else(|| StateError::OwnerNoBudget(owner.clone()))?;
            let (period, _) = budget.period.at(now);
            let spent = shared.owner_spent(owner, period);
            let (credit, outcome) = credit_of(budget.cap, spent, state.owner_credit(owner, period)?, *change);
            let kind = EventKind::OwnerBudgetCredited {
                owner: owner.clone(),
                period,
                credit,
                change: *change,
                reason: reason.clone(),
            };
            Ok((vec![event(kind)], Planned::Credited(outcome)))
        }
        Op::RaiseOwnerMark { owner, mark } => {
            state.owner(owner)?;
            if state.current_owner_mark(owner, now)? >= *mark {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::OwnerBudgetMark {
                owner: owner.clone(),
                mark: *mark,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::SetLifecycle(scope, policy) => Ok((
            vec![event(EventKind::LifecycleSet {
                scope: scope.clone(),
                policy: *policy,
            })],
            Planned::Done,
        )),
        Op::ClearLifecycle(scope) => {
            if state.lifecycle().get(scope).is_none() {
                return Err(StateError::NoLifecyclePolicy(scope.to_string()).into());
            }
            Ok((
                vec![event(EventKind::LifecycleCleared { scope: scope.clone() })],
                Planned::Done,
            ))
        }
        Op::Notices(notices) => {
            let mut events = Vec::new();
            for notice in notices {
                let (kind, id, episode, logged) = match notice {
                    Notice::Expiring { id, expires_at, reason } => (
                        NOTICE_EXPIRING,
                        id,
                        *expires_at,
                        EventKind::KeyExpiring {
                            id: id.clone(),
                            expires_at: *expires_at,
                            reason: *reason,
                        },
                    ),
                    Notice::Unused {
                        id,
                        last_used_at,
                        since,
                    } => (
                        NOTICE_UNUSED,
                        id,
                        *since,
                        EventKind::KeyUnused {
                            id: id.clone(),
                            last_used_at: *last_used_at,
                            since: *since,
                        },
                    ),
                    Notice::Expired { id, deadline, reason } => (
                        NOTICE_EXPIRED,
                        id,
                        *deadline,
                        EventKind::KeyExpired {
                            id: id.clone(),
                            deadline: *deadline,
                            reason: *reason,
                        },
                    ),
                };
                // Once per episode; none for a key revoked since the sweep looked.
                let live = state
                    .get(id)?
                    .is_some_and(|k| k.record.status_at(now) != crate::record::Status::Revoked);
                if live && state.notice(kind, id)? != Some(episode) {
                    events.push(event(logged));
                }
            }
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            Ok((events, Planned::Count(count)))
        }
        Op::Anomalies(found) => {
            let mut events = Vec::with_capacity(found.len());
            for f in found {
                // Never about a key the store does not hold (the detector only sees keys
                // that matched).
                if let Some(id) = &f.id
                    && state.get(id)?.is_none()
                {
                    continue;
                }
                events.push(Event {
                    at: now,
                    kind: EventKind::KeyAnomaly {
                        id: f.id.clone(),
                        anomaly: f.anomaly.clone(),
                    },
                });
            }
            let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
            Ok((events, Planned::Count(count)))
        }
        Op::Leak {
            id,
            token_type,
            url,
            source,
        } => {
            let stored = state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            let was_live = stored.record.status_at(now) != crate::record::Status::Revoked;
            let mut events = vec![event(EventKind::KeyLeaked {
                id: id.clone(),
                token_type: token_type.clone(),
                url: url.clone(),
                source: source.clone(),
                was_live,
            })];
            if was_live {
                events.push(event(EventKind::KeyRevoked {
                    id: id.clone(),
                    effective_at: now,
                    reason: Some(leak_reason(source, url)),
                }));
            }
            Ok((events, Planned::Count(u32::from(was_live))))
        }
        // Leases are answered before a batch is planned; none reaches here.
        #[cfg(feature = "fleet")]
        Op::Lease(_) => Err(crate::Error::NotCommitted(
            "a budget lease is not a change to plan".to_string(),
        )),
        // A fleet host checks the index again: another host may have imported meanwhile.
        Op::Import(keys) => plan_import(state, keys, now, last_id, shared.fleet_host),
        Op::Retag { id, tag, sha256, start } => {
            let stored = state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            // A racing verify re-tagged it first, or it was never imported by this hash.
            if !stored.tag.is_pending() || state.imported_id(&sha256.0)?.as_ref() != Some(id) {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::KeyRetagged {
                id: id.clone(),
                tag: *tag,
                sha256: *sha256,
                start: start.clone(),
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::RaiseMark { id, mark } => {
            state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            if state.current_mark(id, now)? >= *mark {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::BudgetMark {
                id: id.clone(),
                mark: *mark,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::WebhookAdd { id, url, kinds } => {
            if state.webhook(id)?.is_some() {
                return Err(InputError::InvalidWebhook(format!("id {id} is taken")).into());
            }
            // Delivery starts after what is durable now: the webhook gets what commits
            // from here on, not the store's history.
            let after = *super::lock(&shared.published.0);
            let kind = EventKind::WebhookAdded {
                id: id.clone(),
                url: url.clone(),
                kinds: kinds.clone(),
                after,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::WebhookRemove(id) => {
            state
                .webhook(id)?
                .ok_or_else(|| StateError::UnknownWebhook(id.to_string()))?;
            Ok((vec![event(EventKind::WebhookRemoved { id: id.clone() })], Planned::Done))
        }
        Op::WebhookAttempt {
            id,
            event: at,
            attempt,
            status,
            error,
            delivered,
        } => {
            state
                .webhook(id)?
                .ok_or_else(|| StateError::UnknownWebhook(id.to_string()))?;
            let kind = EventKind::WebhookAttempt {
                id: id.clone(),
                event: *at,
                attempt: *attempt,
                status: *status,
                error: error.clone(),
                delivered: *delivered,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::BudgetThreshold {
            id,
            period,
            percent,
            spent,
            cap,
        } => {
            state.get(id)?.ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
            if state.threshold(id)?.is_some_and(|logged| logged >= (*period, *percent)) {
                return Ok((vec![], Planned::Done));
            }
            let kind = EventKind::BudgetThreshold {
                id: id.clone(),
                period: *period,
                percent: *percent,
                spent: *spent,
                cap: *cap,
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::Disable(id) => {
            if state.live(id, now)?.record.disabled_at.is_some() {
                return Err(StateError::AlreadyDisabled(id.to_string()).into());
            }
            Ok((
                vec![event(EventKind::KeyDisabled { id: id.clone() })],
                Planned::Changed(id.clone()),
            ))
        }
        Op::Enable(id) => {
            if state.live(id, now)?.record.disabled_at.is_none() {
                return Err(StateError::NotDisabled(id.to_string()).into());
            }
            Ok((
                vec![event(EventKind::KeyEnabled { id: id.clone() })],
                Planned::Changed(id.clone()),
            ))
        }
        Op::DashMint {
            link,
            owner,
            scopes,
            ttl_ms,
            session_ttl_ms,
            return_url,
        } => {
            state.owner(owner)?;
            let expires_at = now.saturating_add(*ttl_ms);
            let kind = EventKind::DashboardLinkMinted {
                link: *link,
                owner: owner.clone(),
                scopes: *scopes,
                expires_at,
                session_ttl_ms: *session_ttl_ms,
                return_url: return_url.clone(),
            };
            Ok((vec![event(kind)], Planned::At(expires_at)))
        }
        Op::DashRedeem { link, session } => {
            let entry = state.dash_link(link).ok_or(StateError::UnknownDashboardLink)?;
            if entry.redeemed {
                return Err(StateError::DashboardLinkUsed.into());
            }
            if now >= entry.expires_at {
                return Err(StateError::DashboardLinkExpired.into());
            }
            // An owner removed since the mint has no keys to show.
            state.owner(&entry.owner)?;
            let id = session.session_id();
            let expires_at = now.saturating_add(entry.session_ttl_ms);
            let started = crate::dashboard::Session {
                id: id.clone(),
                owner: entry.owner.clone(),
                scopes: entry.scopes,
                started_at: now,
                expires_at,
                return_url: entry.return_url.clone(),
            };
            let kind = EventKind::DashboardSessionStarted {
                link: *link,
                session: *session,
                id,
                expires_at,
            };
            Ok((vec![event(kind)], Planned::Session(started)))
        }
        Op::DashRevoke { session, id } => {
            let found = match (session, id) {
                (Some(hash), _) => state.dash_session(hash),
                (None, Some(id)) => state.dash_session_by_id(id),
                (None, None) => None,
            };
            let entry = found.ok_or(StateError::UnknownDashboardSession)?;
            let kind = EventKind::DashboardSessionRevoked {
                session: entry.hash,
                id: entry.session.id.clone(),
            };
            Ok((vec![event(kind)], Planned::Done))
        }
        Op::AsSession(acting) => {
            let entry = state
                .dash_session(&acting.session)
                .ok_or(StateError::UnknownDashboardSession)?;
            let session = entry.session;
            if now >= session.expires_at {
                return Err(StateError::DashboardSessionExpired.into());
            }
            if !session.scopes.contains(acting.scope) {
                return Err(StateError::ScopeMissing(acting.scope.name()).into());
            }
            // Another owner's key is answered as no key at all: a session learns nothing
            // of keys that are not its owner's.
            if let Some(id) = &acting.key
                && state.owner_of(id)?.as_deref() != Some(session.owner.as_str())
            {
                return Err(StateError::UnknownKey(id.to_string()).into());
            }
            // Nor is an admin key, whoever owns it: the admin role and format are never the
            // dashboard's to give (rolling one would show a fresh admin secret).
            if let Some(id) = &acting.key
                && state.get(id)?.is_some_and(|k| {
                    k.record.format.is_admin() || k.record.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE)
                })
            {
                return Err(StateError::UnknownKey(id.to_string()).into());
            }
            if let Op::Create(key) = &acting.op
                && key.new.owner.as_deref() != Some(session.owner.as_str())
            {
                return Err(StateError::UnknownOwner(key.new.owner.clone().unwrap_or_default()).into());
            }
            // A create adds a live key, and so does a roll whose old key lives on through a
            // grace period: both count against the owner's bound.
            let adds_a_key = match &acting.op {
                Op::Create(_) => true,
                Op::Rotate { grace_ms, .. } => grace_ms.is_some_and(|g| g > 0),
                _ => false,
            };
            if adds_a_key && let Some(max) = acting.max_keys {
                let mut unrevoked = 0u32;
                for id in state.keys_of_owner(&session.owner)? {
                    if state
                        .get(&id)?
                        .is_some_and(|k| k.record.status_at(now) != crate::record::Status::Revoked)
                    {
                        unrevoked += 1;
                    }
                }
                if unrevoked >= max {
                    return Err(StateError::OwnerKeyLimit {
                        owner: session.owner.clone(),
                        max,
                    }
                    .into());
                }
            }
            let (mut events, planned) = plan(state, &acting.op, now, last_id, shared)?;
            let (action, key) = match (&acting.op, &planned) {
                (Op::Create(_), Planned::Created(id, _)) => ("key.created", Some(id.clone())),
                (Op::Rotate { .. }, Planned::Rotated(_, new, _)) => ("key.rotated", Some(new.clone())),
                (Op::Revoke { .. }, _) => ("key.revoked", acting.key.clone()),
                _ => ("key.updated", acting.key.clone()),
            };
            events.push(event(EventKind::DashboardChange {
                session: session.id.clone(),
                owner: session.owner.clone(),
                action: action.to_string(),
                key,
            }));
            Ok((events, planned))
        }
        Op::Revoke { id, reason } => {
            state.live(id, now)?;
            let kind = EventKind::KeyRevoked {
                id: id.clone(),
                effective_at: now,
                reason: reason.clone(),
            };
            Ok((vec![event(kind)], Planned::Changed(id.clone())))
        }
        Op::Rotate { id, grace_ms } => {
            let old = state.live(id, now)?.record;
            if let Some(next) = &old.rotated_to {
                return Err(StateError::AlreadyRotated(id.to_string(), next.to_string()).into());
            }
            // An admin key issued in a customer format, before admin keys had their own,
            // is rotated into the admin format.
            let legacy_admin = matches!(old.kind, KeyKind::Service)
                && old.role.as_ref().is_some_and(|r| r.as_str() == ADMIN_ROLE)
                && !old.format.is_admin();
            let format = if legacy_admin {
                Format::admin()
            } else {
                old.format.clone()
            };
            let mut events = register_format(state, &format, now)?;
            // The grace is at least the policy's least grace (`Store::rotate` raised it
            // already; a policy set since is applied here).
            let policy = state.lifecycle().for_record(&old);
            let grace_ms = match (grace_ms, &policy.min_grace) {
                (asked, Some(min)) => Some(asked.unwrap_or(0).max(min.ms)),
                (asked, None) => *asked,
            };
            // The grace period never outlives the old key's own expiry.
            let grace_end = now.saturating_add(grace_ms.unwrap_or(0));
            let old_revoked_at = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
            let secret = format.generate();
            let tag = shared.tag_of(secret.expose().as_bytes());
            let record = KeyRecord {
                id: KeyId::next(now, last_id),
                start: format.start_of(secret.expose()).to_string(),
                format,
                created_at: now,
                // The same lifetime the old key was given, counted from now, and no later
                // than any expiry may be.
                expires_at: old
                    .expires_at
                    .map(|e| now.saturating_add(e - old.created_at).min(LATEST_EXPIRY_MS))
                    .map(|e| {
                        policy
                            .max_lifetime
                            .as_ref()
                            .map_or(e, |m| e.min(now.saturating_add(m.ms)))
                    })
                    .or_else(|| policy.max_lifetime.as_ref().map(|m| now.saturating_add(m.ms))),
                disabled_at: old.disabled_at.map(|_| now),
                revoked: None,
                rotated_from: Some(id.clone()),
                rotated_to: None,
                ..old
            };
            let planned = Planned::Rotated(id.clone(), record.id.clone(), secret);
            events.push(event(EventKind::KeyRotated {
                old: id.clone(),
                old_revoked_at,
                record,
                tag,
            }));
            Ok((events, planned))
        }
    }
}

/// A budget's credit after `change`, given its `cap`, what it has `spent` this period and
/// the credit it had (`before`); and what is left then.
fn credit_of(cap: u64, spent: u64, before: i64, change: crate::event::CreditChange) -> (i64, super::Credit) {
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let spent_i = i64::try_from(spent).unwrap_or(i64::MAX);
    let credit = match change {
        crate::event::CreditChange::Add(n) => before.saturating_add(n),
        crate::event::CreditChange::Set(left) => spent_i.saturating_add(i64::try_from(left).unwrap_or(i64::MAX)) - cap,
    };
    // Never a cap below zero; never more credit than a budget can count.
    let credit = credit
        .max(-cap)
        .clamp(-super::cache::MAX_CREDIT, super::cache::MAX_CREDIT);
    let cap_now = u64::try_from(cap.saturating_add(credit)).unwrap_or(0);
    let outcome = super::Credit {
        credit,
        cap: cap_now,
        remaining: cap_now.saturating_sub(spent),
    };
    (credit, outcome)
}

/// The most bytes of imported keys one `key.imported` record carries (well under the
/// log's frame limit, whatever the keys' metadata).
const IMPORT_RECORD_BYTES: usize = 256 * 1024;

/// Plans an import: checks each key against the state (its prefix's registered
/// environment, its plan, role and user, a SHA-256 not imported already) and records them
/// in as few `key.imported` records as the record size allows. Any refusal refuses all.
fn plan_import(
    state: &Overlay<'_>,
    keys: &[super::commit::PreparedImport],
    now: i64,
    last_id: &mut u128,
    in_index: bool,
) -> Result<(Vec<Event>, Planned)> {
    // The index was checked by `Store::import`, which holds the store's import lock: only
    // imports add SHA-256 entries, so none can have come since in this process (`in_index`:
    // look again, for a fleet host).
    check_import(state, keys, now, in_index)?;
    use crate::event::ImportedKey;
    let mut events = Vec::new();
    let mut chunk: Vec<ImportedKey> = Vec::new();
    let mut chunk_bytes = 0;
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        let format = &key.format;
        let new = &key.new;
        let expires_at = new
            .expires
            .map(|e| e.resolve(now))
            .transpose()
            .map_err(|e| crate::import::bad_line(key.line, "expires_at", e.to_string()))?;
        let id = KeyId::next(now, last_id);
        let record = new_record(
            new,
            id,
            format.prefix().to_string(),
            format,
            &key.project,
            now,
            expires_at,
        );
        ids.push(record.id.clone());
        let imported = ImportedKey {
            record,
            sha256: key.sha256,
        };
        let bytes = crate::event::encode_payload(&imported).len();
        if !chunk.is_empty() && chunk_bytes + bytes > IMPORT_RECORD_BYTES {
            let keys = std::mem::take(&mut chunk);
            events.push(Event {
                at: now,
                kind: EventKind::KeysImported { keys },
            });
            chunk_bytes = 0;
        }
        chunk_bytes += bytes;
        chunk.push(imported);
    }
    if !chunk.is_empty() {
        events.push(Event {
            at: now,
            kind: EventKind::KeysImported { keys: chunk },
        });
    }
    Ok((events, Planned::Imported(ids)))
}

/// The checks of [`plan_import`] that depend on the state, for every key: its prefix's
/// registered environment, its plan, role and user, its expiry, a SHA-256 imported once
/// (within `keys`, and when `in_index`, among the keys already imported).
pub(super) fn check_import(
    state: &Overlay<'_>,
    keys: &[super::commit::PreparedImport],
    now: i64,
    in_index: bool,
) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    let mut prefixes_checked: Vec<&str> = Vec::new();
    for key in keys {
        let at_line = |field: &str, e: crate::Error| crate::import::bad_line(key.line, field, e.to_string());
        let format = &key.format;
        if !prefixes_checked.contains(&format.prefix()) {
            if let Some(registered) = state.formats().env_of_prefix(format.prefix())
                && registered != format.env()
            {
                let e = InputError::PrefixEnvironmentConflict {
                    prefix: format.prefix().to_string(),
                    registered,
                };
                return Err(at_line("env", e.into()).into());
            }
            prefixes_checked.push(format.prefix());
        }
        if !seen.insert(key.sha256.0) || (in_index && state.imported_id(&key.sha256.0)?.is_some()) {
            let why = "a key with this hash is imported already".to_string();
            return Err(crate::import::bad_line(key.line, "sha256", why).into());
        }
        let new = &key.new;
        if let Some(plan) = &new.plan {
            state.plan(plan).map_err(|e| at_line("plan", e))?;
        }
        if let Some(role) = &new.role {
            state.role(role.as_str()).map_err(|e| at_line("role", e))?;
        }
        if let KeyKind::Personal { user } = &new.kind {
            let found = state.user(user).map_err(|e| at_line("user", e))?;
            if found.role_in(&key.project).is_none() {
                let e = StateError::NotAMember {
                    user: user.clone(),
                    project: key.project.clone(),
                };
                return Err(at_line("user", e.into()).into());
            }
        }
        if let Some(expiry) = new.expires {
            expiry.resolve(now).map_err(|e| at_line("expires_at", e.into()))?;
        }
    }
    Ok(())
}

/// An expiry (`None`: none asked) held to the policy's max lifetime for a key created at
/// `created_at`: none becomes the latest allowed; a later one is refused, naming the
/// policy.
fn within_max_lifetime(
    asked: Option<i64>,
    created_at: i64,
    policy: &crate::lifecycle::Effective,
    now: i64,
) -> Result<Option<i64>> {
    let Some(max) = &policy.max_lifetime else {
        return Ok(asked);
    };
    let latest = created_at.saturating_add(max.ms).min(LATEST_EXPIRY_MS);
    match asked {
        None => Ok(Some(latest.max(now))),
        Some(e) if e <= latest => Ok(Some(e)),
        Some(e) => Err(StateError::BeyondMaxLifetime {
            asked: crate::clock::fmt_time(e),
            max: crate::lifecycle::fmt_duration(max.ms),
            scope: max.scope.to_string(),
        }
        .into()),
    }
}

/// The revocation reason of a leaked key: who found it where, cut to fit a reason.
fn leak_reason(source: &str, url: &str) -> String {
    let mut reason = format!("leaked: reported by {source} at {url}");
    if reason.len() > crate::record::MAX_REASON_LEN {
        let mut end = crate::record::MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// The record of a key made now from `new`'s settings (a create's or an import's), with
/// its id, public start, format, project and resolved expiry.
fn new_record(
    new: &crate::record::NewKey,
    id: KeyId,
    start: String,
    format: &Format,
    project: &str,
    now: i64,
    expires_at: Option<i64>,
) -> KeyRecord {
    KeyRecord {
        id,
        name: new.name.clone(),
        start,
        format: format.clone(),
        project: project.to_string(),
        created_at: now,
        expires_at,
        disabled_at: None,
        revoked: None,
        metadata: new.metadata.clone(),
        rotated_from: None,
        rotated_to: None,
        rate_limits: new.rate_limits.clone(),
        budget: new.budget,
        plan: new.plan.clone(),
        kind: new.kind.clone(),
        role: new.role.clone(),
        permissions: new.permissions.clone(),
        allow_ips: new.allow_ips.clone(),
        allow_referrers: new.allow_referrers.clone(),
        allow_endpoints: new.allow_endpoints.clone(),
    }
}

fn register_format(state: &Overlay<'_>, format: &Format, now: i64) -> Result<Vec<Event>> {
    if state.formats().contains(format) {
        return Ok(vec![]);
    }
    if let Some(registered) = state.formats().env_of_prefix(format.prefix())
        && registered != format.env()
    {
        return Err(InputError::PrefixEnvironmentConflict {
            prefix: format.prefix().to_string(),
            registered,
        }
        .into());
    }
    Ok(vec![Event {
        at: now,
        kind: EventKind::FormatRegistered { format: format.clone() },
    }])
}
