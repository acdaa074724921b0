//! Access policy primitives: permissions and permission queries, roles, and the per-key
//! restrictions (IP, referrer and endpoint allowlists) behind steps 4 to 6 of DESIGN.md's
//! verification order.
//!
//! Everything here is parsed once, when a key or role is created or loaded, into a form
//! that answers a per-request question without allocating: [`PermissionSet::allows`],
//! [`PermissionQuery::evaluate`], [`IpAllowlist::allows`], [`ReferrerAllowlist::allows`] and
//! [`EndpointAllowlist::allows`] only compare bytes and integers. Every type serialises as
//! the strings it was parsed from (a permission and a query as one string, an allowlist as
//! a list of strings), and deserialising parses them again, so a record can never carry a
//! policy that would not parse.
//!
//! ```
//! use credstore::policy::{builtin_role, EndpointAllowlist, IpAllowlist, Permission, PermissionQuery};
//!
//! # fn main() -> Result<(), credstore::InputError> {
//! let member = builtin_role("member").expect("a built-in role");
//! let query = PermissionQuery::parse("(docs:read OR docs:write) AND jobs:run")?;
//! assert!(query.evaluate(member.permissions()));
//! assert!(!member.permissions().allows(&Permission::parse("docs:write")?));
//!
//! let ips = IpAllowlist::new(["10.0.0.0/8", "2001:db8::/32"])?;
//! assert!(ips.allows("10.1.2.3".parse().expect("an address")));
//! assert!(ips.allows("::ffff:10.1.2.3".parse().expect("an address")));
//! assert!(!ips.allows("192.168.0.1".parse().expect("an address")));
//!
//! let endpoints = EndpointAllowlist::new(["GET /v1/users/*", "ANY /v1/jobs/**"])?;
//! assert!(endpoints.allows("get", "/v1/users/42?expand=1"));
//! assert!(!endpoints.allows("DELETE", "/v1/users/42"));
//! assert!(endpoints.allows("DELETE", "/v1/jobs/7/logs"));
//! # Ok(())
//! # }
//! ```

mod bytes;
mod endpoint;
mod ip;
mod macros;
mod permission;
mod query;
mod referrer;
mod role;
mod user;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use endpoint::{EndpointAllowlist, MAX_GLOB_LEN, MAX_METHOD_LEN, PathGlob};
pub use ip::IpAllowlist;
pub use permission::{MAX_PERMISSION_LEN, Permission, PermissionSet};
pub use query::{MAX_QUERY_ATOMS, MAX_QUERY_DEPTH, MAX_QUERY_LEN, PermissionQuery};
pub use referrer::{MAX_HOST_LEN, ReferrerAllowlist, referrer_host};
pub use role::{ADMIN_ROLE, BUILTIN_ROLES, MAX_ROLE_NAME_LEN, Role, RoleName, builtin_role};
pub use user::{User, validate_user_id};

/// Which restriction refused a request (a `FORBIDDEN` decision names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forbidden {
    /// The client address is not in the key's IP allowlist.
    Ip,
    /// The referrer (or origin) is not in the key's referrer allowlist, or is missing or
    /// unparsable while the allowlist is not empty.
    Referrer,
    /// The method and path are not in the key's endpoint allowlist.
    Endpoint,
    /// The request pinned a project the key does not belong to.
    Project,
    /// The request pinned an environment (live or test) the key does not belong to.
    Environment,
    /// A personal token whose user was removed.
    #[serde(rename = "user_removed")]
    UserRemoved,
    /// A personal token whose user is not (or no longer) a member of the token's project.
    #[serde(rename = "not_a_member")]
    NotAMember,
    /// An admin key presented for a customer request: admin keys are for the management
    /// API only.
    #[serde(rename = "admin_key")]
    AdminKey,
    /// A key that is not an admin key presented to the management API.
    #[serde(rename = "not_admin_key")]
    NotAdminKey,
}

impl Forbidden {
    /// `ip`, `referrer`, `endpoint`, `project`, `environment`, `user_removed`,
    /// `not_a_member`, `admin_key` or `not_admin_key`, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Ip => "ip",
            Forbidden::Referrer => "referrer",
            Forbidden::Endpoint => "endpoint",
            Forbidden::Project => "project",
            Forbidden::Environment => "environment",
            Forbidden::UserRemoved => "user_removed",
            Forbidden::NotAMember => "not_a_member",
            Forbidden::AdminKey => "admin_key",
            Forbidden::NotAdminKey => "not_admin_key",
        }
    }

    /// The reason in a few words, for people: `ip not allowed`, `user removed`, ...
    pub fn explain(self) -> &'static str {
        match self {
            Forbidden::Ip => "ip not allowed",
            Forbidden::Referrer => "referrer not allowed",
            Forbidden::Endpoint => "endpoint not allowed",
            Forbidden::Project => "project not allowed",
            Forbidden::Environment => "environment not allowed",
            Forbidden::UserRemoved => "user removed",
            Forbidden::NotAMember => "user not a member of the project",
            Forbidden::AdminKey => "an admin key: for the management API only",
            Forbidden::NotAdminKey => "not an admin key",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The input, quoted for an error: cut to 64 characters, a secret-shaped one to its
/// public start (see [`crate::redact`]).
fn quote(s: &str) -> String {
    crate::redact::quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Helpers the other policy files' tests share too (`use crate::policy::tests::{perm, set}`).

    pub(super) fn perm(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    pub(super) fn set(items: &[&str]) -> PermissionSet {
        PermissionSet::parse(items).unwrap()
    }

    #[test]
    fn forbidden_names() {
        for (f, s) in [
            (Forbidden::Ip, "ip"),
            (Forbidden::Referrer, "referrer"),
            (Forbidden::Endpoint, "endpoint"),
            (Forbidden::Project, "project"),
            (Forbidden::Environment, "environment"),
            (Forbidden::UserRemoved, "user_removed"),
            (Forbidden::NotAMember, "not_a_member"),
            (Forbidden::AdminKey, "admin_key"),
            (Forbidden::NotAdminKey, "not_admin_key"),
        ] {
            assert_eq!(f.as_str(), s);
            assert_eq!(f.to_string(), s);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Forbidden>(&format!("\"{s}\"")).unwrap(), f);
        }
    }

    #[test]
    fn serde_as_source_strings() {
        let p = perm("docs:*");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""docs:*""#);
        let q = PermissionQuery::parse("(a:b OR c:d) and e:f").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), r#""(a:b OR c:d) and e:f""#);
        let ips = IpAllowlist::new(["10.1.2.3/8", "::1"]).unwrap();
        assert_eq!(serde_json::to_string(&ips).unwrap(), r#"["10.1.2.3/8","::1"]"#);
        let role = builtin_role("member").unwrap();
        assert_eq!(
            serde_json::to_string(&role).unwrap(),
            r#"{"name":"member","permissions":["*:read","*:run"]}"#
        );
        // Deserialising parses again: a record cannot smuggle in a bad policy.
        assert!(serde_json::from_str::<Permission>(r#""Docs:read""#).is_err());
        assert!(serde_json::from_str::<PermissionQuery>(r#""(a:b""#).is_err());
        assert!(serde_json::from_str::<IpAllowlist>(r#"["10.0.0.0/33"]"#).is_err());
        assert!(serde_json::from_str::<ReferrerAllowlist>(r#"["https://x.com"]"#).is_err());
        assert!(serde_json::from_str::<EndpointAllowlist>(r#"["GET x"]"#).is_err());
        assert!(serde_json::from_str::<Role>(r#"{"name":"Bad","permissions":[]}"#).is_err());
        // bincode (the record encoding) round-trips too.
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&ips, cfg).unwrap();
        let (back, _): (IpAllowlist, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, ips);
        assert!(back.allows("10.200.0.1".parse().unwrap()));
    }
}
