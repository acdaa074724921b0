//! The answer to "may this key make this request?".

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::limits::MAX_LIMIT_NAME_LEN;
use crate::name::InlineName;
use crate::policy::{Forbidden, RoleName};
use crate::record::{KeyRecord, Status};
use crate::token::Malformed;

/// The outcome of a verification, in DESIGN.md's order of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Code {
    /// The key may make the request.
    Valid,
    /// Not a key of any registered format.
    Malformed,
    /// Well-formed, but no such key.
    NotFound,
    /// The key was revoked.
    Revoked,
    /// The key is disabled.
    Disabled,
    /// The key has expired.
    Expired,
    /// The key may not act here (environment, project, IP, referrer, endpoint), or a
    /// personal token's user was removed or is not a member of its project.
    Forbidden,
    /// The key lacks a required permission.
    InsufficientPermissions,
    /// A rate limit is exhausted.
    RateLimited,
    /// The budget is exhausted.
    BudgetExhausted,
}

impl Code {
    /// Every code, in the order of its byte on disk ([`Code::byte`]): the packed use
    /// records and the usage tree store codes by that byte, so it is append only.
    pub const ALL: [Code; 10] = [
        Code::Valid,
        Code::Malformed,
        Code::NotFound,
        Code::Revoked,
        Code::Disabled,
        Code::Expired,
        Code::Forbidden,
        Code::InsufficientPermissions,
        Code::RateLimited,
        Code::BudgetExhausted,
    ];

    /// The code's byte on disk: its place in [`Code::ALL`].
    pub const fn byte(self) -> u8 {
        match self {
            Code::Valid => 0,
            Code::Malformed => 1,
            Code::NotFound => 2,
            Code::Revoked => 3,
            Code::Disabled => 4,
            Code::Expired => 5,
            Code::Forbidden => 6,
            Code::InsufficientPermissions => 7,
            Code::RateLimited => 8,
            Code::BudgetExhausted => 9,
        }
    }

    /// The code a byte on disk names, if any.
    pub fn from_byte(byte: u8) -> Option<Code> {
        Code::ALL.get(usize::from(byte)).copied()
    }

    /// The code as printed: `VALID`, `NOT_FOUND`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::Malformed => "MALFORMED",
            Code::NotFound => "NOT_FOUND",
            Code::Revoked => "REVOKED",
            Code::Disabled => "DISABLED",
            Code::Expired => "EXPIRED",
            Code::Forbidden => "FORBIDDEN",
            Code::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            Code::RateLimited => "RATE_LIMITED",
            Code::BudgetExhausted => "BUDGET_EXHAUSTED",
        }
    }

    /// The code for a key in `status`: `None` for an active key (the checks go on).
    pub fn for_status(status: Status) -> Option<Code> {
        match status {
            Status::Revoked => Some(Code::Revoked),
            Status::Disabled => Some(Code::Disabled),
            Status::Expired => Some(Code::Expired),
            Status::Active => None,
        }
    }

    /// The HTTP status a server answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::Malformed | Code::NotFound | Code::Revoked | Code::Disabled | Code::Expired => 401,
            Code::BudgetExhausted => 402,
            Code::Forbidden | Code::InsufficientPermissions => 403,
            Code::RateLimited => 429,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verification's decision: the code and, once the key was found, the key's public
/// fields and the state of its rate limits and budget.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The outcome.
    pub code: Code,
    /// For [`Code::Malformed`]: which check failed.
    pub malformed: Option<Malformed>,
    /// The key, when it was found (every code but `MALFORMED` and `NOT_FOUND`).
    pub key: Option<Arc<KeyRecord>>,
    /// Each rate limit of the key, after this request (empty before step 7).
    pub ratelimits: RateLimits,
    /// The key's budget, after this request (`None`: no budget, or not reached).
    pub budget: Option<BudgetState>,
    /// For [`Code::RateLimited`]: whether the limit is used up for now, or the request
    /// is heavier than a limit admits at all.
    pub rate_limited: Option<RateLimited>,
    /// For [`Code::RateLimited`] when the limit is used up: seconds until the request
    /// could pass (`None` for a request over a limit's capacity: it never can).
    pub retry_after: Option<u64>,
    /// For [`Code::Forbidden`]: which check failed.
    pub forbidden: Option<Forbidden>,
    /// The role the key acted with (a personal token: its user's current role).
    pub role: Option<RoleName>,
    /// When the store decided, unix ms: the one time the verify read, which the rate
    /// limits' `reset` and the budget's period count from (0 when no key was found).
    pub at: i64,
    /// The key's owner, for a key that has one (once its checks reached step 7). Its rate
    /// limits are among [`Decision::ratelimits`], named `owner:` and the limit's name.
    pub owner: Option<Arc<crate::owner::Owner>>,
    /// The owner's budget, after this request (`None`: no owner, no budget, or not reached).
    pub owner_budget: Option<BudgetState>,
}

/// A rate limit's name, inline (at most [`MAX_LIMIT_NAME_LEN`] bytes): a decision copies
/// it rather than counting a reference.
pub type LimitName = InlineName<MAX_LIMIT_NAME_LEN>;

/// The rate limits a decision reports: inline up to two (most keys have one or two), so a
/// verify allocates nothing for them; derefs to a slice.
pub type RateLimits = smallvec::SmallVec<[RateLimitState; 2]>;

/// One rate limit as a decision reports it. In JSON `reset` is a time
/// ([`crate::clock::fmt_time`]), as every time is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimitState {
    /// The limit's name.
    pub name: LimitName,
    /// Requests per window.
    pub limit: u32,
    /// The window, ms.
    pub window_ms: u64,
    /// Requests (of weight 1) that would still pass now.
    pub remaining: u32,
    /// Unix seconds when the limit is full again.
    #[serde(serialize_with = "crate::clock::serialize_secs")]
    pub reset: u64,
    /// When this limit denied the request: seconds until it would pass.
    pub retry_after: Option<u64>,
    /// Whether the request's weight is over this limit's capacity (its `limit`): such a
    /// request never passes.
    pub over_capacity: bool,
}

/// Why a rate limit refused a request ([`Code::RateLimited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RateLimited {
    /// The limit is used up for now; [`Decision::retry_after`] says when the request
    /// could pass.
    Exhausted,
    /// The request's weight is more than a limit admits in a whole window (its burst):
    /// it can never pass, however long it waits. No retry time.
    OverCapacity,
}

impl RateLimited {
    /// `exhausted` or `over_capacity`, as JSON gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimited::Exhausted => "exhausted",
            RateLimited::OverCapacity => "over_capacity",
        }
    }
}

impl fmt::Display for RateLimited {
    /// A sentence for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateLimited::Exhausted => "rate limit exhausted for now",
            RateLimited::OverCapacity => "request weight exceeds the rate limit's capacity: it can never pass",
        })
    }
}

/// A budget as a decision reports it. In JSON `period_end` is a time
/// ([`crate::clock::fmt_time`]) or null, as every time is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetState {
    /// The cap per period.
    pub cap: u64,
    /// Spent in the current period, this request included.
    pub spent: u64,
    /// `cap - spent`.
    pub remaining: u64,
    /// When the period ends, unix ms (`None`: a lifetime total).
    #[serde(serialize_with = "crate::clock::serialize_opt_ms")]
    pub period_end: Option<i64>,
    /// Whether this request was charged (test keys never are).
    pub charged: bool,
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn is_valid(&self) -> bool {
        self.code == Code::Valid
    }

    /// The HTTP status for this decision.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    pub(crate) fn malformed(why: Malformed) -> Self {
        Decision {
            code: Code::Malformed,
            malformed: Some(why),
            ..Decision::empty()
        }
    }

    pub(crate) fn not_found() -> Self {
        Decision {
            code: Code::NotFound,
            ..Decision::empty()
        }
    }

    pub(crate) fn with_key(code: Code, key: Arc<KeyRecord>, at: i64) -> Self {
        Decision {
            code,
            key: Some(key),
            at,
            ..Decision::empty()
        }
    }

    fn empty() -> Self {
        Decision {
            code: Code::NotFound,
            malformed: None,
            key: None,
            ratelimits: RateLimits::new(),
            budget: None,
            rate_limited: None,
            retry_after: None,
            forbidden: None,
            role: None,
            at: 0,
            owner: None,
            owner_budget: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_as_designed() {
        let table = [
            (Code::Valid, "VALID", 200),
            (Code::Malformed, "MALFORMED", 401),
            (Code::NotFound, "NOT_FOUND", 401),
            (Code::Revoked, "REVOKED", 401),
            (Code::Disabled, "DISABLED", 401),
            (Code::Expired, "EXPIRED", 401),
            (Code::Forbidden, "FORBIDDEN", 403),
            (Code::InsufficientPermissions, "INSUFFICIENT_PERMISSIONS", 403),
            (Code::RateLimited, "RATE_LIMITED", 429),
            (Code::BudgetExhausted, "BUDGET_EXHAUSTED", 402),
        ];
        for (code, text, status) in table {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.http_status(), status);
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
        }
    }
}
