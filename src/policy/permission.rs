//! Permissions: [`Permission`], one `resource:action` grant or requirement, its parser,
//! and [`PermissionSet`], the grants of a role or a key.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::macros::text_impls;
use super::{PermissionQuery, quote};
use crate::error::InputError;

/// The longest permission, in bytes (`resource:action` together).
pub const MAX_PERMISSION_LEN: usize = 64;

/// A validated permission: `resource:action`, each segment 1 or more characters of
/// `[a-z0-9_.-]`, at most [`MAX_PERMISSION_LEN`] bytes in all.
///
/// In a grant either segment may be `*` (any), and `*` alone is everything (`*:*`):
/// `*`, `*:read`, `docs:*`. A `*` stands for a whole segment only (`doc*:read` is refused).
/// A permission a request *requires* may use `*` too; it then means "all of them", so it
/// is granted only by a grant at least as wide (`docs:*` is granted by `docs:*`, `*:*`
/// and `*`, not by `docs:read`). See [`Permission::grants`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission {
    text: Box<str>,
    resource: Segment,
    action: Segment,
    /// The keys of `resource` and `action` (see `segment_key`), so that a grant is
    /// checked with integer compares.
    keys: [u128; 2],
}

impl Permission {
    /// Parses a permission.
    ///
    /// # Errors
    /// [`InputError::InvalidPermission`] naming what is wrong: empty, too long, no `:` or
    /// more than one, an empty segment, a `*` that is not a whole segment, or a character
    /// outside `[a-z0-9_.-]` (upper case included).
    pub fn parse(text: &str) -> Result<Self, InputError> {
        parse_permission(text).map_err(|why| InputError::InvalidPermission(format!("{}: {why}", quote(text))))
    }

    /// The permission as text, as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The resource segment (`docs` in `docs:read`; `*` for `*`).
    pub fn resource(&self) -> &str {
        self.resource.as_str()
    }

    /// The action segment (`read` in `docs:read`; `*` for `*`).
    pub fn action(&self) -> &str {
        self.action.as_str()
    }

    /// True when either segment is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.resource == Segment::Any || self.action == Segment::Any
    }

    /// True when this permission, held as a grant, grants `required`: segment by
    /// segment, a granted `*` matches anything and a named segment matches only the
    /// same name. So `*` grants everything, `*:read` grants `docs:read`, `docs:*` grants
    /// `docs:write`, and `docs:read` grants only `docs:read`.
    pub fn grants(&self, required: &Permission) -> bool {
        if required.has_long_name() {
            self.grants_by_name(required)
        } else {
            self.grants_by_key(required)
        }
    }

    /// True when a segment of `self` is a name longer than its key holds.
    fn has_long_name(&self) -> bool {
        let [resource, action] = self.keys;
        (resource | action) & LONG_KEY != 0
    }

    /// [`Permission::grants`] by the keys alone, exact when `required` has no long name:
    /// then a granted name covers a required one exactly when their keys are equal.
    fn grants_by_key(&self, required: &Permission) -> bool {
        let ([resource, action], [needed_resource, needed_action]) = (self.keys, required.keys);
        (resource == 0 || resource == needed_resource) && (action == 0 || action == needed_action)
    }

    /// [`Permission::grants`] by the names themselves.
    fn grants_by_name(&self, required: &Permission) -> bool {
        self.resource.covers(&required.resource) && self.action.covers(&required.action)
    }

    fn from_segments(text: Box<str>, resource: Segment, action: Segment) -> Permission {
        let keys = [segment_key(&resource), segment_key(&action)];
        Permission {
            text,
            resource,
            action,
            keys,
        }
    }

    /// `*:{action}`, for the built-in roles (the action is a valid segment).
    pub(super) fn any_resource(action: &'static str) -> Permission {
        Permission::from_segments(
            format!("*:{action}").into_boxed_str(),
            Segment::Any,
            Segment::Name(action.into()),
        )
    }

    /// `*`: everything.
    pub(super) fn everything() -> Permission {
        Permission::from_segments("*".into(), Segment::Any, Segment::Any)
    }
}

text_impls!(Permission);

/// The effective grants of a key: its role's permissions plus any extra ones.
///
/// Serialises as the list of its permissions' strings.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct PermissionSet {
    grants: Vec<Permission>,
    /// Some grant is `*` / `*:*`: everything is allowed without a scan.
    everything: bool,
}

impl PermissionSet {
    /// A set of these grants, in this order.
    pub fn new(grants: impl IntoIterator<Item = Permission>) -> Self {
        let grants: Vec<Permission> = grants.into_iter().collect();
        let everything = grants
            .iter()
            .any(|g| g.resource == Segment::Any && g.action == Segment::Any);
        PermissionSet { grants, everything }
    }

    /// Parses a list of permissions.
    ///
    /// # Errors
    /// [`InputError::InvalidPermission`] for the first one that does not parse.
    pub fn parse<I, S>(grants: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let grants = grants
            .into_iter()
            .map(|g| Permission::parse(g.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PermissionSet::new(grants))
    }

    /// The grants of both sets (`self`'s first), without repeating one that `self`
    /// already holds: a role's permissions plus a key's extra ones.
    pub fn union(&self, other: &PermissionSet) -> PermissionSet {
        let mut grants = self.grants.clone();
        for g in &other.grants {
            if !grants.contains(g) {
                grants.push(g.clone());
            }
        }
        PermissionSet::new(grants)
    }

    /// True when some grant in the set grants `required` (see [`Permission::grants`]).
    pub fn allows(&self, required: &Permission) -> bool {
        if self.everything {
            return true;
        }
        if required.has_long_name() {
            return self.allows_by_name(required);
        }
        self.grants.iter().any(|g| g.grants_by_key(required))
    }

    /// [`PermissionSet::allows`] for a permission with a name too long for its key.
    #[cold]
    #[inline(never)]
    fn allows_by_name(&self, required: &Permission) -> bool {
        self.grants.iter().any(|g| g.grants_by_name(required))
    }

    /// True when the set satisfies `query`; the same as [`PermissionQuery::evaluate`].
    pub fn satisfies(&self, query: &PermissionQuery) -> bool {
        query.evaluate(self)
    }

    /// The grants, in order.
    pub fn permissions(&self) -> &[Permission] {
        &self.grants
    }

    /// True when the set grants nothing.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The number of grants.
    pub fn len(&self) -> usize {
        self.grants.len()
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PermissionSet").field(&self.grants).finish()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        PermissionSet::new(iter)
    }
}

impl TryFrom<Vec<String>> for PermissionSet {
    type Error = InputError;

    fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
        PermissionSet::parse(v)
    }
}

impl From<PermissionSet> for Vec<String> {
    fn from(set: PermissionSet) -> Vec<String> {
        set.grants.into_iter().map(String::from).collect()
    }
}

/// One segment of a permission: `*`, or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Any,
    Name(Box<str>),
}

impl Segment {
    /// True when this segment, in a grant, covers `required`.
    fn covers(&self, required: &Segment) -> bool {
        match (self, required) {
            (Segment::Any, _) => true,
            (Segment::Name(a), Segment::Name(b)) => a == b,
            (Segment::Name(_), Segment::Any) => false,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Segment::Any => "*",
            Segment::Name(name) => name,
        }
    }
}

/// The key of a segment, for [`Permission::grants`]: 0 for `*`; for a name, its first
/// 16 bytes zero padded, with bit 127 set when the name is longer (names are ASCII, so
/// that bit is otherwise clear). Names have no NUL byte, so two names of at most 16 bytes
/// are equal exactly when their keys are, and a longer name never has the key of a
/// shorter one.
fn segment_key(segment: &Segment) -> u128 {
    match segment {
        Segment::Any => 0,
        Segment::Name(name) => {
            let mut head = [0u8; 16];
            head.iter_mut().zip(name.bytes()).for_each(|(slot, b)| *slot = b);
            let long = if name.len() > 16 { LONG_KEY } else { 0 };
            u128::from_le_bytes(head) | long
        }
    }
}

/// Bit 127 of a segment key: the name is longer than its key holds.
const LONG_KEY: u128 = 1 << 127;

fn is_permission_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

/// Parses a permission; the error says what is wrong, without repeating the input.
pub(super) fn parse_permission(text: &str) -> Result<Permission, String> {
    if text.is_empty() {
        return Err("it is empty; write resource:action, e.g. docs:read".into());
    }
    if text.len() > MAX_PERMISSION_LEN {
        return Err(format!(
            "it is {} bytes long, the limit is {MAX_PERMISSION_LEN}",
            text.len()
        ));
    }
    if text == "*" {
        return Ok(Permission::everything());
    }
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(_, c)| !(is_permission_char(c) || c == ':' || c == '*'))
    {
        return Err(if c.is_ascii_uppercase() {
            format!("character {c:?} at offset {i} is upper case; permissions are lower case")
        } else {
            format!("character {c:?} at offset {i} is not allowed; use a-z 0-9 _ . - and one ':'")
        });
    }
    let Some((resource, action)) = text.split_once(':') else {
        return Err("it has no ':'; write resource:action, e.g. docs:read (or * for everything)".into());
    };
    if action.contains(':') {
        return Err("it has more than one ':'; write resource:action".into());
    }
    let segment = |s: &str, what: &str| -> Result<Segment, String> {
        if s.is_empty() {
            Err(format!("the {what} is empty; write resource:action, e.g. docs:read"))
        } else if s == "*" {
            Ok(Segment::Any)
        } else if s.contains('*') {
            Err(format!("a '*' must be the whole {what}, as in docs:* or *:read"))
        } else {
            Ok(Segment::Name(s.into()))
        }
    };
    Ok(Permission::from_segments(
        text.into(),
        segment(resource, "resource")?,
        segment(action, "action")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{perm, set};

    #[test]
    fn permission_parse_accepts_and_splits() {
        for (text, resource, action) in [
            ("docs:read", "docs", "read"),
            ("connections:write", "connections", "write"),
            ("a.b-c_d:e9", "a.b-c_d", "e9"),
            ("*", "*", "*"),
            ("*:*", "*", "*"),
            ("*:read", "*", "read"),
            ("docs:*", "docs", "*"),
        ] {
            let p = perm(text);
            assert_eq!((p.as_str(), p.resource(), p.action()), (text, resource, action));
            assert_eq!(p.to_string(), text);
        }
        let longest = format!("{}:{}", "a".repeat(31), "b".repeat(32));
        assert_eq!(longest.len(), MAX_PERMISSION_LEN);
        assert!(Permission::parse(&longest).is_ok());
    }

    #[test]
    fn permission_parse_refuses_with_reasons() {
        let too_long = format!("{}:{}", "a".repeat(32), "b".repeat(32));
        for (text, reason) in [
            ("", "empty"),
            ("docs", "no ':'"),
            ("docs:read:all", "more than one ':'"),
            (":read", "resource is empty"),
            ("docs:", "action is empty"),
            ("Docs:read", "upper case"),
            ("docs:réad", "not allowed"),
            ("docs read", "not allowed"),
            ("doc*:read", "whole resource"),
            ("docs:**", "whole action"),
            ("**", "no ':'"),
            (too_long.as_str(), "65 bytes"),
        ] {
            match Permission::parse(text) {
                Err(InputError::InvalidPermission(msg)) => {
                    assert!(msg.contains(reason), "{text:?}: {msg}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn grants_table() {
        for (granted, required, expected) in [
            ("*", "docs:read", true),
            ("*", "*", true),
            ("*", "docs:*", true),
            ("*:*", "docs:read", true),
            ("*:read", "docs:read", true),
            ("*:read", "docs:write", false),
            ("docs:*", "docs:write", true),
            ("docs:*", "users:write", false),
            ("docs:read", "docs:read", true),
            ("docs:read", "docs:write", false),
            ("docs:read", "doc:read", false),
            ("docs:read", "docs:*", false),
            ("docs:*", "docs:*", true),
            ("*:read", "*:read", true),
            ("*:read", "docs:*", false),
            ("docs:read", "*", false),
            ("*:read", "*", false),
        ] {
            assert_eq!(
                perm(granted).grants(&perm(required)),
                expected,
                "{granted} grants {required}"
            );
        }
    }

    #[test]
    fn permission_set_allows() {
        let s = set(&["docs:read", "users:*"]);
        assert!(s.allows(&perm("docs:read")));
        assert!(s.allows(&perm("users:delete")));
        assert!(!s.allows(&perm("docs:write")));
        assert!(!PermissionSet::default().allows(&perm("docs:read")));
        assert!(set(&["*:*"]).allows(&perm("*")));
        let u = s.union(&set(&["docs:read", "jobs:run"]));
        assert_eq!(
            u.permissions().iter().map(Permission::as_str).collect::<Vec<_>>(),
            ["docs:read", "users:*", "jobs:run"]
        );
        assert!(u.allows(&perm("jobs:run")));
    }
}
