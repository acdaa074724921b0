//! The answers the layer gives itself: RFC 9457 problem documents for denials, and the
//! rate-limit header fields every answer of a rate-limited key carries.

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::decision::{Code, Decision, RateLimited};
use crate::policy::{Forbidden, PermissionQuery};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The default prefix of a problem's `type`: `urn:credstore:problem:rate-limited`, ...
/// Set your own (a documentation URL) with [`super::ApiKeyLayer::problem_type_base`].
pub const DEFAULT_PROBLEM_TYPE_BASE: &str = "urn:credstore:problem:";

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Which rate-limit fields the layer's answers carry ([`super::ApiKeyLayer::rate_limit_fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RateLimitFields {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`, and the IETF
    /// draft's `RateLimit-Policy` and `RateLimit` (the default).
    #[default]
    Both,
    /// Only `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    XRateLimit,
    /// Only the IETF draft's `RateLimit-Policy` and `RateLimit`.
    Draft,
    /// None (a 429 still carries `Retry-After`).
    Off,
}

impl RateLimitFields {
    fn x_ratelimit(self) -> bool {
        matches!(self, RateLimitFields::Both | RateLimitFields::XRateLimit)
    }

    fn draft(self) -> bool {
        matches!(self, RateLimitFields::Both | RateLimitFields::Draft)
    }
}

/// The rate-limit header fields for a decision, empty when the key has no rate limits (or
/// the checks stopped before step 7):
///
/// - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (unix seconds) of
///   the limit that refused the request, else of the one with the fewest requests left;
/// - `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` for every limit (`w` in seconds, given
///   for the key's own limits; a plan's limits carry no window in the decision);
/// - `RateLimit: "name";r=REMAINING;t=RESET_IN` for every limit, `t` in seconds from
///   `now_secs` (unix seconds).
pub fn rate_limit_headers(decision: &Decision, now_secs: u64) -> Vec<(HeaderName, HeaderValue)> {
    RateFields::of(decision, now_secs, RateLimitFields::Both).map_or_else(Vec::new, RateFields::into_vec)
}

/// The rate-limit fields of one answer, built on every request: the chosen values (up to
/// five) written into one buffer, without `fmt` (itoa's digit pairs; the formatting
/// machinery costs more than a verify), and carried compactly (the answer's future moves
/// it) until they are set.
#[derive(Debug)]
pub(crate) struct RateFields {
    /// Limit, remaining, reset, policy and current, one after the other; a value left out
    /// (see [`RateLimitFields`]) takes no bytes, and every value written takes at least one.
    buf: Bytes,
    /// Where each of the first four values ends; the last one ends with `buf`.
    ends: [usize; 4],
}

impl RateFields {
    /// The `fields` for `decision`; `None` when it reports no rate limit or `fields` is
    /// [`RateLimitFields::Off`]. All values are written into one buffer and handed out as
    /// slices of it: one allocation, not five. A field left out has an empty range.
    pub(crate) fn of(decision: &Decision, now_secs: u64, fields: RateLimitFields) -> Option<Self> {
        if fields == RateLimitFields::Off {
            return None;
        }
        let limits = &decision.ratelimits;
        let primary = limits
            .iter()
            .find(|l| l.retry_after.is_some() || l.over_capacity)
            .or_else(|| limits.iter().min_by_key(|l| (l.remaining, std::cmp::Reverse(l.reset))))?;
        let mut buf = Vec::with_capacity(48 + 64 * limits.len());
        if fields.x_ratelimit() {
            push_u64(&mut buf, u64::from(primary.limit));
        }
        let limit_end = buf.len();
        if fields.x_ratelimit() {
            push_u64(&mut buf, u64::from(primary.remaining));
        }
        let remaining_end = buf.len();
        if fields.x_ratelimit() {
            push_u64(&mut buf, primary.reset);
        }
        let reset_end = buf.len();
        if !fields.draft() {
            return Some(RateFields {
                buf: Bytes::from(buf),
                ends: [limit_end, remaining_end, reset_end, reset_end],
            });
        }
        for (i, l) in limits.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b", ");
            }
            // Rate-limit names are [A-Za-z0-9_./-]: nothing to escape in a structured string.
            push_quoted(&mut buf, &l.name);
            buf.extend_from_slice(b";q=");
            push_u64(&mut buf, u64::from(l.limit));
            buf.extend_from_slice(b";w=");
            push_u64(&mut buf, l.window_ms.div_ceil(1000));
        }
        let policy_end = buf.len();
        for (i, l) in limits.iter().enumerate() {
            if i > 0 {
                buf.extend_from_slice(b", ");
            }
            push_quoted(&mut buf, &l.name);
            buf.extend_from_slice(b";r=");
            push_u64(&mut buf, u64::from(l.remaining));
            buf.extend_from_slice(b";t=");
            push_u64(&mut buf, l.reset.saturating_sub(now_secs));
        }
        Some(RateFields {
            buf: Bytes::from(buf),
            ends: [limit_end, remaining_end, reset_end, policy_end],
        })
    }

    /// Each field's name and range in the buffer, the fields left out (empty ranges: every
    /// value written has at least one character) skipped.
    fn ranges(&self) -> impl Iterator<Item = (HeaderName, usize, usize)> {
        let [limit, remaining, reset, policy] = self.ends;
        [
            (X_RATELIMIT_LIMIT, 0, limit),
            (X_RATELIMIT_REMAINING, limit, remaining),
            (X_RATELIMIT_RESET, remaining, reset),
            (RATELIMIT_POLICY, reset, policy),
            (RATELIMIT, policy, self.buf.len()),
        ]
        .into_iter()
        .filter(|&(_, from, to)| from < to)
    }

    /// The fields, by name: slices of the one buffer.
    fn fields(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        // Digits and printable ASCII: every slice is a valid value.
        self.ranges().filter_map(|(name, from, to)| {
            let value = HeaderValue::from_maybe_shared(self.buf.slice(from..to)).ok()?;
            Some((name, value))
        })
    }

    /// Sets the fields on a response's headers.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        // Room for one more: axum sets `content-length` after the route's layers return,
        // and that field would otherwise grow the map a second time.
        headers.reserve(self.ranges().count() + 1);
        for (name, value) in self.fields() {
            headers.insert(name, value);
        }
    }

    fn into_vec(self) -> Vec<(HeaderName, HeaderValue)> {
        self.fields().collect()
    }
}

fn push_quoted(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// `n` in decimal: itoa's two digits per step, not one (a window of 10^9 requests is
/// ten digits, written twice per answer).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Builds the problem documents; made once per layer.
#[derive(Debug, Clone)]
pub(crate) struct Problems {
    base: Box<str>,
    /// The one 401 body, for a missing key and every 401 decision alike.
    unauthorized: Bytes,
}

impl Problems {
    pub(crate) fn new(base: &str, key_hint: &str) -> Self {
        let body = json!({
            "type": format!("{base}unauthorized"),
            "title": "Unauthorized",
            "status": 401,
            "detail": format!("A valid API key is required: {key_hint}."),
            "code": "UNAUTHORIZED",
        });
        Problems {
            base: base.into(),
            unauthorized: Bytes::from(body.to_string()),
        }
    }

    /// The 401 answer: the same for a missing, malformed, unknown, revoked, disabled or
    /// expired key.
    pub(crate) fn unauthorized(&self) -> Response {
        let mut response = respond(StatusCode::UNAUTHORIZED, Body::from(self.unauthorized.clone()));
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }

    /// The answer when the store could not be read.
    pub(crate) fn unavailable(&self) -> Response {
        let body = self.document(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "The credential store could not be read.",
            "INTERNAL_ERROR",
            Map::new(),
        );
        respond(StatusCode::INTERNAL_SERVER_ERROR, body)
    }

    /// The answer to a denied decision, with its rate-limit fields (and `Retry-After` for 429).
    pub(crate) fn denied(
        &self,
        decision: &Decision,
        required: Option<&PermissionQuery>,
        rate: Option<RateFields>,
    ) -> Response {
        let mut extra = Map::new();
        let (status, slug, title, detail) = match decision.code {
            // The layer never calls this for a valid key; were it to, 401 is the safe answer.
            Code::Valid | Code::Malformed | Code::NotFound | Code::Revoked | Code::Disabled | Code::Expired => {
                return self.unauthorized();
            }
            Code::BudgetExhausted => {
                if let Some(budget) = &decision.budget {
                    extra.insert("budget".into(), json!(budget));
                }
                (
                    StatusCode::PAYMENT_REQUIRED,
                    "budget-exhausted",
                    "Budget exhausted",
                    "The API key's budget does not cover this request in the current period.".to_string(),
                )
            }
            Code::Forbidden => {
                let why = decision.forbidden;
                if let Some(why) = why {
                    extra.insert("restriction".into(), json!(why.as_str()));
                }
                (
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Forbidden",
                    forbidden_detail(why).to_string(),
                )
            }
            Code::InsufficientPermissions => {
                if let Some(q) = required {
                    extra.insert("required".into(), json!(q.as_str()));
                }
                (
                    StatusCode::FORBIDDEN,
                    "insufficient-permissions",
                    "Insufficient permissions",
                    "The API key lacks a permission this endpoint requires.".to_string(),
                )
            }
            Code::RateLimited if decision.rate_limited == Some(RateLimited::OverCapacity) => {
                let limit = decision.ratelimits.iter().find(|l| l.over_capacity);
                if let Some(l) = limit {
                    extra.insert("limit".into(), json!(&*l.name));
                }
                extra.insert("reason".into(), json!(RateLimited::OverCapacity.as_str()));
                let detail = match limit {
                    Some(l) => format!(
                        "The request's weight is over the capacity of rate limit \"{}\" ({} per window): it can never pass.",
                        l.name, l.limit
                    ),
                    None => "The request's weight is over a rate limit's capacity: it can never pass.".to_string(),
                };
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limit-over-capacity",
                    "Request over the rate limit's capacity",
                    detail,
                )
            }
            Code::RateLimited => {
                let limit = decision.ratelimits.iter().find(|l| l.retry_after.is_some());
                if let Some(l) = limit {
                    extra.insert("limit".into(), json!(&*l.name));
                }
                extra.insert("reason".into(), json!(RateLimited::Exhausted.as_str()));
                extra.insert("retry_after".into(), json!(decision.retry_after));
                let detail = match (limit, decision.retry_after) {
                    (Some(l), Some(s)) => format!("Rate limit \"{}\" exceeded; retry in {s} s.", l.name),
                    _ => "A rate limit of the API key is exceeded.".to_string(),
                };
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Rate limit exceeded",
                    detail,
                )
            }
        };
        let body = self.document(status, slug, title, &detail, decision.code.as_str(), extra);
        let mut response = respond(status, body);
        let headers = response.headers_mut();
        if let Some(rate) = rate {
            rate.apply(headers);
        }
        if let Some(after) = decision.retry_after.filter(|_| decision.code == Code::RateLimited) {
            headers.insert(RETRY_AFTER, HeaderValue::from(after));
        }
        response
    }

    fn document(
        &self,
        status: StatusCode,
        slug: &str,
        title: &str,
        detail: &str,
        code: &str,
        extra: Map<String, Value>,
    ) -> Body {
        let mut doc = Map::new();
        doc.insert("type".into(), json!(format!("{}{slug}", self.base)));
        doc.insert("title".into(), json!(title));
        doc.insert("status".into(), json!(status.as_u16()));
        doc.insert("detail".into(), json!(detail));
        doc.insert("code".into(), json!(code));
        doc.extend(extra);
        Body::from(Value::Object(doc).to_string())
    }
}

fn forbidden_detail(why: Option<Forbidden>) -> &'static str {
    match why {
        Some(Forbidden::Ip) => "The API key may not be used from this address.",
        Some(Forbidden::Referrer) => "The API key may not be used from this referrer or origin.",
        Some(Forbidden::Endpoint) => "The API key may not call this endpoint.",
        Some(Forbidden::Project) => "The API key does not belong to this project.",
        Some(Forbidden::Environment) => "The API key belongs to another environment (live or test).",
        Some(Forbidden::UserRemoved) => "The API key's user was removed.",
        Some(Forbidden::NotAMember) => "The API key's user is not a member of its project.",
        Some(Forbidden::AdminKey) => "An admin key is for the management API only.",
        Some(Forbidden::NotAdminKey) => "The management API requires an admin key.",
        None => "The API key may not make this request.",
    }
}

/// A problem answer: status, body, `Content-Type` and `Cache-Control: no-store`.
fn respond(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{LimitName, RateLimitState};

    fn limit(name: &str, limit: u32, window_ms: u64, remaining: u32, reset: u64) -> RateLimitState {
        RateLimitState {
            name: LimitName::new(name).unwrap(),
            limit,
            window_ms,
            remaining,
            reset,
            retry_after: None,
            over_capacity: false,
        }
    }

    fn fields(decision: &Decision, choice: RateLimitFields) -> Vec<(String, String)> {
        RateFields::of(decision, 1_000, choice)
            .map(RateFields::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn each_choice_writes_its_fields_and_only_those() {
        let mut decision = Decision::not_found();
        // The minute limit has fewer requests left: it is the primary one.
        decision.ratelimits.push(limit("second", 10, 1_000, 9, 1_001));
        decision.ratelimits.push(limit("minute", 100, 60_000, 0, 1_060));
        let x = [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1060"),
        ];
        let draft = [
            ("ratelimit-policy", r#""second";q=10;w=1, "minute";q=100;w=60"#),
            ("ratelimit", r#""second";r=9;t=1, "minute";r=0;t=60"#),
        ];
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        let both: Vec<(&str, &str)> = x.iter().chain(&draft).copied().collect();
        assert_eq!(fields(&decision, RateLimitFields::Both), owned(&both));
        assert_eq!(fields(&decision, RateLimitFields::XRateLimit), owned(&x));
        assert_eq!(fields(&decision, RateLimitFields::Draft), owned(&draft));
        assert_eq!(fields(&decision, RateLimitFields::Off), owned(&[]));
        // The public function keeps both families.
        let public: Vec<(String, String)> = rate_limit_headers(&decision, 1_000)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(public, owned(&both));
    }

    #[test]
    fn no_limits_no_fields() {
        for choice in [
            RateLimitFields::Both,
            RateLimitFields::XRateLimit,
            RateLimitFields::Draft,
        ] {
            assert!(RateFields::of(&Decision::not_found(), 0, choice).is_none());
        }
    }

    #[test]
    fn zeros_are_written_not_left_out() {
        let mut decision = Decision::not_found();
        decision.ratelimits.push(limit("z", 0, 0, 0, 0));
        assert_eq!(fields(&decision, RateLimitFields::Both).len(), 5);
        assert_eq!(fields(&decision, RateLimitFields::XRateLimit).len(), 3);
        assert_eq!(fields(&decision, RateLimitFields::Draft).len(), 2);
    }
}
