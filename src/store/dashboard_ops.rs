//! The customers' dashboard's sessions (`crate::dashboard`): links minted, redeemed once,
//! sessions looked up, revoked, and the changes made through them. Every change is an
//! [`Op`] planned on the commit thread against the latest state, so a link redeemed on
//! one host of a fleet is used on every host, and a revoked session acts nowhere.

use std::time::Duration;

use crate::dashboard::{
    LINK_PREFIX, LinkRequest, MintedLink, SESSION_PREFIX, Scopes, Session, StartedSession, TokenHash, new_token,
    well_formed,
};
use crate::decision::BudgetState;
use crate::error::{Error, InputError, Result, StateError};
use crate::limits::Budget;
use crate::record::{KeyId, NewKey, Status};

use super::commit::{Op, Outcome, SessionOp};
use super::{CreatedKey, KeyInfo, ListFilter, Rotated, Store};

/// What derives the key that seals a dashboard session's new key on its way to the keys
/// page (BLAKE3 `derive_key` context), from the pepper and the session token.
const REVEAL_CONTEXT: &str = "credstore 2026-12 dashboard reveal cookie v1";

impl Store {
    /// The key that seals a new key for the keys page of the session whose token is
    /// `session_token`: the same on every host sharing the pepper, unknown to anyone
    /// without the session's cookie.
    pub(crate) fn dashboard_reveal_key(&self, session_token: &str) -> zeroize::Zeroizing<[u8; 32]> {
        let mut material = zeroize::Zeroizing::new(Vec::with_capacity(32 + session_token.len()));
        material.extend_from_slice(self.shared.pepper.bytes());
        material.extend_from_slice(session_token.as_bytes());
        zeroize::Zeroizing::new(blake3::derive_key(REVEAL_CONTEXT, &material))
    }

    /// The store's clock now, unix ms (what sessions and links expire by).
    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// Mints a single-use link to the customers' dashboard for `req.owner` (which must
    /// exist). The log keeps only the link token's hash; show the token (or
    /// [`MintedLink::url`]) to the owner once.
    ///
    /// # Errors
    /// [`Error::Input`] for a bad request ([`LinkRequest::check`]);
    /// [`StateError::UnknownOwner`].
    pub fn mint_dashboard_link(&self, req: &LinkRequest) -> Result<MintedLink> {
        req.check()?;
        let token = new_token(LINK_PREFIX);
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let op = Op::DashMint {
            link: TokenHash::of(token.expose()),
            owner: req.owner.clone(),
            scopes: req.scopes,
            ttl_ms: ms(req.ttl),
            session_ttl_ms: ms(req.session_ttl),
            return_url: req.return_url.clone(),
        };
        match self.submit(op)? {
            Outcome::At(expires_at) => Ok(MintedLink { token, expires_at }),
            _ => Err(Error::UnexpectedReply {
                request: "dashboard link",
            }),
        }
    }

    /// Redeems a link for a session: the first redemption in the log's order wins, so a
    /// link works once (fleet-wide), and only before it expires.
    ///
    /// # Errors
    /// [`StateError::UnknownDashboardLink`] (also for a malformed token),
    /// [`StateError::DashboardLinkUsed`], [`StateError::DashboardLinkExpired`].
    pub fn redeem_dashboard_link(&self, link: &str) -> Result<StartedSession> {
        if !well_formed(link, LINK_PREFIX) {
            return Err(StateError::UnknownDashboardLink.into());
        }
        let token = new_token(SESSION_PREFIX);
        let op = Op::DashRedeem {
            link: TokenHash::of(link),
            session: TokenHash::of(token.expose()),
        };
        match self.submit(op)? {
            Outcome::Session(session) => Ok(StartedSession {
                token,
                session: *session,
            }),
            _ => Err(Error::UnexpectedReply {
                request: "dashboard redeem",
            }),
        }
    }

    /// The live session whose token is `token`.
    ///
    /// # Errors
    /// [`StateError::UnknownDashboardSession`] (never started, revoked, or malformed),
    /// [`StateError::DashboardSessionExpired`].
    pub fn dashboard_session(&self, token: &str) -> Result<Session> {
        // A fleet host cut off from its fleet may not know of a revocation made elsewhere:
        // it fails closed, as verify does.
        if self.shared.fleet_stale.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Stale);
        }
        if !well_formed(token, SESSION_PREFIX) {
            return Err(StateError::UnknownDashboardSession.into());
        }
        let dir = self.shared.directory.load();
        let entry = dir
            .dash_sessions
            .get(&TokenHash::of(token).to_hex())
            .ok_or(StateError::UnknownDashboardSession)?;
        if self.shared.clock.now_ms() >= entry.session.expires_at {
            return Err(StateError::DashboardSessionExpired.into());
        }
        Ok(entry.session.clone())
    }

    /// Every dashboard session that has not ended or been revoked, oldest first.
    pub fn dashboard_sessions(&self) -> Vec<Session> {
        let now = self.shared.clock.now_ms();
        let mut out: Vec<Session> = self
            .shared
            .directory
            .load()
            .dash_sessions
            .values()
            .filter(|s| s.session.expires_at > now)
            .map(|s| s.session.clone())
            .collect();
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        out
    }

    /// Revokes the session with public id `id` (`ds_...`): its cookie works nowhere after.
    ///
    /// # Errors
    /// [`StateError::UnknownDashboardSession`].
    pub fn revoke_dashboard_session(&self, id: &str) -> Result<()> {
        let op = Op::DashRevoke {
            session: None,
            id: Some(id.to_string()),
        };
        match self.submit(op)? {
            Outcome::Done => Ok(()),
            _ => Err(Error::UnexpectedReply {
                request: "dashboard revoke",
            }),
        }
    }

    /// Ends the session whose token is `token` (the page's "Sign out").
    ///
    /// # Errors
    /// [`StateError::UnknownDashboardSession`].
    pub fn end_dashboard_session(&self, token: &str) -> Result<()> {
        if !well_formed(token, SESSION_PREFIX) {
            return Err(StateError::UnknownDashboardSession.into());
        }
        let op = Op::DashRevoke {
            session: Some(TokenHash::of(token)),
            id: None,
        };
        match self.submit(op)? {
            Outcome::Done => Ok(()),
            _ => Err(Error::UnexpectedReply {
                request: "dashboard sign out",
            }),
        }
    }

    /// The keys of the session's owner, newest first (the session needs `keys:read`).
    ///
    /// # Errors
    /// As [`Store::dashboard_session`]; [`StateError::ScopeMissing`].
    pub fn session_keys(&self, token: &str) -> Result<Vec<KeyInfo>> {
        let session = self.dashboard_session(token)?;
        if !session.scopes.contains(Scopes::KEYS_READ) {
            return Err(StateError::ScopeMissing("keys:read").into());
        }
        let mut keys = self.list(&ListFilter {
            owner: Some(session.owner),
            ..ListFilter::default()
        })?;
        keys.sort_by(|a, b| b.record.id.cmp(&a.record.id));
        Ok(keys)
    }

    /// Creates a key for the session's owner (`keys:create`): `new.owner` is set to it.
    /// `max_keys` bounds the owner's unrevoked keys. Logged with the session as actor.
    ///
    /// # Errors
    /// As [`Store::create`]; the session's errors; [`StateError::OwnerKeyLimit`].
    pub fn session_create(&self, token: &str, mut new: NewKey, max_keys: Option<u32>) -> Result<CreatedKey> {
        let session = self.dashboard_session(token)?;
        // The admin role is never the dashboard's to give.
        if new
            .role
            .as_ref()
            .is_some_and(|r| r.as_str() == crate::policy::ADMIN_ROLE)
            || new.format.as_ref().is_some_and(crate::token::Format::is_admin)
        {
            return Err(StateError::AdminRequired("creating an admin key").into());
        }
        new.owner = Some(session.owner);
        let prepared = self.prepare_key(new)?;
        let op = self.as_session(token, Scopes::KEYS_CREATE, None, max_keys, Op::Create(prepared));
        match self.submit(op)? {
            Outcome::Created(record, key) => Ok(CreatedKey { key, record }),
            _ => Err(Error::UnexpectedReply { request: "create" }),
        }
    }

    /// Revokes one of the session owner's keys (`keys:revoke`), logged with the session.
    ///
    /// # Errors
    /// The session's errors; [`StateError::UnknownKey`] for a key not the owner's; as
    /// [`Store::revoke`].
    pub fn session_revoke(&self, token: &str, id: &KeyId) -> Result<KeyInfo> {
        let op = Op::Revoke {
            id: id.clone(),
            reason: Some("revoked on the dashboard".into()),
        };
        self.change(self.as_session(token, Scopes::KEYS_REVOKE, Some(id.clone()), None, op))
    }

    /// Rolls one of the session owner's keys (`keys:roll`): a new key with the same
    /// settings, the old one revoked at once or after `grace`.
    ///
    /// # Errors
    /// The session's errors; as [`Store::rotate`].
    pub fn session_rotate(
        &self,
        token: &str,
        id: &KeyId,
        grace: Option<Duration>,
        max_keys: Option<u32>,
    ) -> Result<Rotated> {
        let grace_ms = grace
            .map(|g| i64::try_from(g.as_millis()).map_err(|_| InputError::InvalidTime(format!("{g:?}"))))
            .transpose()?;
        let op = Op::Rotate {
            id: id.clone(),
            grace_ms,
        };
        match self.submit(self.as_session(token, Scopes::KEYS_ROLL, Some(id.clone()), max_keys, op))? {
            Outcome::Rotated { old, new, secret } => Ok(Rotated {
                new: CreatedKey {
                    key: secret,
                    record: *new,
                },
                old: *old,
                grace_raised_to: None,
            }),
            _ => Err(Error::UnexpectedReply { request: "rotate" }),
        }
    }

    /// Sets (or, `None`, removes) the budget of one of the session owner's keys
    /// (`budget:set`).
    ///
    /// # Errors
    /// The session's errors; as [`Store::update`].
    pub fn session_set_budget(&self, token: &str, id: &KeyId, budget: Option<Budget>) -> Result<KeyInfo> {
        let op = Op::Update {
            id: id.clone(),
            changes: crate::event::KeyChanges {
                budget: Some(budget),
                ..crate::event::KeyChanges::default()
            },
            expires: None,
        };
        self.change(self.as_session(token, Scopes::BUDGET_SET, Some(id.clone()), None, op))
    }

    /// What key `id` has spent of its own budget in the current period, and the cap in
    /// force (moved by any credit): `None` when it has no budget.
    ///
    /// # Errors
    /// [`StateError::UnknownKey`]; when the index cannot be read.
    pub fn key_budget(&self, id: &KeyId) -> Result<Option<BudgetState>> {
        let stored = self
            .shared
            .index
            .get(id)?
            .ok_or_else(|| StateError::UnknownKey(id.to_string()))?;
        if stored.record.status_at(self.shared.clock.now_ms()) == Status::Revoked {
            return Ok(None);
        }
        let live = match self.shared.cache.get(&stored.tag) {
            Some(live) => live,
            None => std::sync::Arc::new(self.shared.load_state(stored.record.clone())?),
        };
        let Some(active) = &live.budget else {
            return Ok(None);
        };
        let now = self.shared.clock.now_ms();
        let (period, period_end) = active.period_at(now);
        let cap = active.in_period(period).cap;
        let spent = self.shared.spent(&stored, period);
        Ok(Some(BudgetState {
            cap,
            spent,
            remaining: cap.saturating_sub(spent),
            period_end,
            charged: false,
        }))
    }

    fn as_session(&self, token: &str, scope: Scopes, key: Option<KeyId>, max_keys: Option<u32>, op: Op) -> Op {
        Op::AsSession(Box::new(SessionOp {
            session: TokenHash::of(token),
            scope,
            key,
            max_keys,
            op,
        }))
    }
}
