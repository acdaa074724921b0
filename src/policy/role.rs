//! Roles: [`RoleName`], [`Role`] (a named set of permissions), and the built-in roles,
//! [`builtin_role`] and [`BUILTIN_ROLES`].

use serde::{Deserialize, Serialize};

use super::macros::text_impls;
use super::{Permission, PermissionSet, quote};
use crate::error::InputError;
use crate::name::InlineName;

/// The longest role name, in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 32;

/// The names of the built-in roles, see [`builtin_role`].
pub const BUILTIN_ROLES: [&str; 3] = [ADMIN_ROLE, "member", "viewer"];

/// The built-in role of admin keys (everything). A service account with it is an admin
/// key: for the management API, never for customer verification.
pub const ADMIN_ROLE: &str = "admin";

/// A role name: 1 to [`MAX_ROLE_NAME_LEN`] characters of `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// Inline, not shared: every verify copies its key's role into the decision.
pub struct RoleName(InlineName<MAX_ROLE_NAME_LEN>);

impl RoleName {
    /// Parses a role name.
    ///
    /// # Errors
    /// [`InputError::InvalidRole`] when it is empty, too long or has a character outside
    /// `[a-z0-9_-]`.
    pub fn parse(name: &str) -> Result<Self, InputError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_ROLE_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        match InlineName::new(name) {
            Some(inline) if ok => Ok(RoleName(inline)),
            _ => Err(InputError::InvalidRole(format!(
                "{}: use 1 to {MAX_ROLE_NAME_LEN} characters of a-z 0-9 _ -",
                quote(name)
            ))),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

text_impls!(RoleName);

/// A named set of permissions. Serialises as `{"name": ..., "permissions": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    name: RoleName,
    permissions: PermissionSet,
}

impl Role {
    /// A role with these permissions.
    pub fn new(name: RoleName, permissions: PermissionSet) -> Self {
        Role { name, permissions }
    }

    /// The role's name.
    pub fn name(&self) -> &RoleName {
        &self.name
    }

    /// The role's permissions.
    pub fn permissions(&self) -> &PermissionSet {
        &self.permissions
    }

    /// True when the role grants `required`.
    pub fn allows(&self, required: &Permission) -> bool {
        self.permissions.allows(required)
    }
}

/// The built-in role of this name: `admin` (`*`, everything), `member` (`*:read` and
/// `*:run`: run and read anything) or `viewer` (`*:read`); `None` for any other name.
pub fn builtin_role(name: &str) -> Option<Role> {
    let permissions = match name {
        "admin" => vec![Permission::everything()],
        "member" => vec![Permission::any_resource("read"), Permission::any_resource("run")],
        "viewer" => vec![Permission::any_resource("read")],
        _ => return None,
    };
    Some(Role {
        name: RoleName::parse(name).ok()?,
        permissions: PermissionSet::new(permissions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{perm, set};

    #[test]
    fn role_names_compare_order_and_hash_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let hash = |r: &RoleName| {
            let mut h = DefaultHasher::new();
            r.hash(&mut h);
            h.finish()
        };
        let names = ["a", "ab", "b", "member", "viewer", &"z".repeat(MAX_ROLE_NAME_LEN)];
        for x in names {
            let rx = RoleName::parse(x).unwrap();
            assert_eq!(rx.as_str(), x);
            assert_eq!(String::from(rx.clone()), x);
            for y in names {
                let ry = RoleName::parse(y).unwrap();
                assert_eq!(rx == ry, x == y);
                assert_eq!(rx.cmp(&ry), x.cmp(y), "{x} vs {y}");
                assert_eq!(hash(&rx) == hash(&ry), x == y);
            }
        }
        assert!(RoleName::parse(&"z".repeat(MAX_ROLE_NAME_LEN + 1)).is_err());
        assert_eq!(format!("{:?}", RoleName::parse("ops").unwrap()), "RoleName(\"ops\")");
    }

    #[test]
    fn builtin_roles() {
        let admin = builtin_role("admin").unwrap();
        let member = builtin_role("member").unwrap();
        let viewer = builtin_role("viewer").unwrap();
        for (required, a, m, v) in [
            ("docs:read", true, true, true),
            ("jobs:run", true, true, false),
            ("docs:write", true, false, false),
            ("users:delete", true, false, false),
            ("*", true, false, false),
        ] {
            let p = perm(required);
            assert_eq!(
                (admin.allows(&p), member.allows(&p), viewer.allows(&p)),
                (a, m, v),
                "{required}"
            );
        }
        assert_eq!(member.name().as_str(), "member");
        assert!(builtin_role("owner").is_none());
        assert!(builtin_role("Admin").is_none());
        for name in BUILTIN_ROLES {
            let role = builtin_role(name).unwrap();
            // The hand-built permissions are what parsing their text gives.
            for p in role.permissions().permissions() {
                assert_eq!(*p, perm(p.as_str()));
            }
            assert_eq!(RoleName::parse(name).unwrap(), *role.name());
        }
    }

    #[test]
    fn role_names() {
        for ok in ["a", "admin", "ci-bot_2", &"r".repeat(32)] {
            assert_eq!(RoleName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "Admin", "a b", "a.b", "a:b", &"r".repeat(33), "ådmin"] {
            assert!(
                matches!(RoleName::parse(bad), Err(InputError::InvalidRole(_))),
                "{bad:?}"
            );
        }
        let role = Role::new(RoleName::parse("ops").unwrap(), set(&["deploys:*"]));
        assert!(role.allows(&perm("deploys:run")));
        assert!(!role.allows(&perm("docs:read")));
    }
}
