//! The store's lifecycle operations: setting and clearing lifecycle policies, the sweep
//! that logs `key.expiring`, `key.unused` and `key.expired`, and leak reports.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::leaks::{Label, LeakReport};
use crate::lifecycle::{ExpiredBecause, Lifecycle, Policies, Scope};
use crate::record::Status;

use super::commit::{Notice, Op, Outcome};
use super::{Shared, Store};

/// The notice periods of the sweep, ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoticePeriods {
    pub expiring_ms: i64,
    pub unused_ms: i64,
}

impl Store {
    /// Sets the lifecycle policy of `scope`, replacing any it had. Keys follow it from the
    /// next verify: a key older than the max lifetime, or unused for the unused expiry, is
    /// refused as `EXPIRED`; a key created from now on without an expiry gets one.
    ///
    /// # Errors
    /// [`crate::InputError::InvalidPolicy`] for a policy with no setting or a setting out of
    /// range (nothing is written).
    pub fn set_lifecycle(&self, scope: Scope, policy: Lifecycle) -> Result<()> {
        policy.validate()?;
        self.submit(Op::SetLifecycle(scope, policy)).map(drop)
    }

    /// Clears the lifecycle policy of `scope`. Expiries it gave keys stay.
    ///
    /// # Errors
    /// [`crate::StateError::NoLifecyclePolicy`] when the scope has none.
    pub fn clear_lifecycle(&self, scope: &Scope) -> Result<()> {
        self.submit(Op::ClearLifecycle(scope.clone())).map(drop)
    }

    /// Every scope's lifecycle policy.
    pub fn lifecycle_policies(&self) -> Policies {
        self.shared.directory.load().lifecycle.clone()
    }

    /// Runs the lifecycle sweep now: logs `key.expiring` for each key expiring within the
    /// notice period ([`super::Config::lifecycle_notices`]), `key.unused` for each key
    /// unused for its notice period, and `key.expired` for each key past its deadline,
    /// each once per episode (a deadline, or a last use). Returns how many events it
    /// logged. The background sweep ([`super::Config::lifecycle_sweep`]) calls the same.
    ///
    /// # Errors
    /// When the index cannot be read or the events cannot be made durable.
    pub fn sweep_lifecycle(&self) -> Result<u32> {
        let notices = due_notices(&self.shared)?;
        if notices.is_empty() {
            return Ok(0);
        }
        match self.submit(Op::Notices(notices))? {
            Outcome::Count(n) => Ok(n),
            _ => Err(Error::UnexpectedReply {
                request: "lifecycle sweep",
            }),
        }
    }

    /// Acts on one token a secret scanner reported: a key of this store (of any
    /// registered format, admin keys included) that is not revoked is revoked at once,
    /// with a reason naming the report's source and url, and is a
    /// [`Label::TruePositive`]; anything else (malformed, unknown, revoked already) is a
    /// [`Label::FalsePositive`]. Every report of a key of this store is logged as
    /// `key.leaked` (its type, url and source; never the token). Finding the key records
    /// no use of it.
    ///
    /// # Errors
    /// When the index cannot be read or the change cannot be made durable.
    pub fn report_leak(&self, report: &LeakReport) -> Result<Label> {
        let Ok(tag) = self.shared.tag_of_admin(report.token.expose()) else {
            return Ok(Label::FalsePositive);
        };
        let Some(stored) = self.shared.index.get_by_tag(&tag)? else {
            return Ok(Label::FalsePositive);
        };
        // Scrubbed of secret-shaped text, and cut to the bounds a parsed report keeps.
        let kept = |text: &str, max: usize| {
            let mut text = crate::redact::scrub(text).into_owned();
            cut(&mut text, max);
            text
        };
        let op = Op::Leak {
            id: stored.record.id,
            token_type: kept(&report.token_type, crate::leaks::MAX_NAME_BYTES),
            url: kept(&report.url, crate::leaks::MAX_URL_BYTES),
            source: kept(&report.source, crate::leaks::MAX_NAME_BYTES),
        };
        match self.submit(op)? {
            Outcome::Count(1) => Ok(Label::TruePositive),
            Outcome::Count(_) => Ok(Label::FalsePositive),
            _ => Err(Error::UnexpectedReply { request: "leak report" }),
        }
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The notices due now, for every key not revoked: expired (past the earlier of its
/// deadline and its unused expiry), else expiring within the notice period, and unused
/// for the notice period. The commit thread drops those already logged for their
/// episode.
pub(crate) fn due_notices(shared: &Shared) -> Result<Vec<Notice>> {
    let now = shared.clock.now_ms();
    let dir = shared.directory.load();
    let periods = shared.notices;
    let mut out = Vec::new();
    for stored in shared.index.list(None, None)? {
        let record = &stored.record;
        // A key revoked, or to be revoked at the end of a rotation's grace, is done with.
        if record.revoked.is_some() || record.status_at(now) == Status::Revoked {
            continue;
        }
        let policy = dir.lifecycle.for_record(record);
        let cached = shared
            .cache
            .get(&stored.tag)
            .map_or(0, |s| s.usage.last_used.load(Ordering::Relaxed));
        let flushed = shared.index.counters(&record.id)?.map_or(0, |c| c.last_used);
        let last_used = cached.max(flushed);
        let since = last_used.max(record.created_at);
        let (mut deadline, mut reason) = policy.deadline(record);
        let unused_ms = policy.unused_ms();
        if unused_ms != i64::MAX && since.saturating_add(unused_ms) < deadline {
            deadline = since.saturating_add(unused_ms);
            reason = ExpiredBecause::Unused;
        }
        let id = record.id.clone();
        if now >= deadline {
            out.push(Notice::Expired { id, deadline, reason });
            continue;
        }
        if deadline != i64::MAX && deadline - now <= periods.expiring_ms {
            out.push(Notice::Expiring {
                id: id.clone(),
                expires_at: deadline,
                reason,
            });
        }
        if now - since >= periods.unused_ms {
            out.push(Notice::Unused {
                id,
                last_used_at: (last_used > 0).then_some(last_used),
                since,
            });
        }
    }
    Ok(out)
}
