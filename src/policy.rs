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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::name::InlineName;

/// The trait impls of a type that is its text, parsed: `Debug` (`Type("text")`),
/// `Display`, `FromStr`, and serde's `TryFrom<String>` / `Into<String>` through
/// `Type::parse` and `as_str`.
macro_rules! text_impls {
    ($t:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.as_str()).finish()
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = InputError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = InputError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.as_str().to_string()
            }
        }
    };
}

/// The longest permission, in bytes (`resource:action` together).
pub const MAX_PERMISSION_LEN: usize = 64;
/// The most permissions (atoms) a [`PermissionQuery`] may name.
pub const MAX_QUERY_ATOMS: usize = 64;
/// The deepest nesting of parentheses a [`PermissionQuery`] may use.
pub const MAX_QUERY_DEPTH: usize = 16;
/// The longest permission query text, in bytes.
pub const MAX_QUERY_LEN: usize = 8192;
/// The longest role name, in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 32;
/// The longest host name in a referrer pattern, in bytes (as DNS allows).
pub const MAX_HOST_LEN: usize = 253;
/// The longest endpoint path glob, in bytes.
pub const MAX_GLOB_LEN: usize = 1024;
/// The longest HTTP method name in an endpoint entry, in bytes.
pub const MAX_METHOD_LEN: usize = 32;
/// The names of the built-in roles, see [`builtin_role`].
pub const BUILTIN_ROLES: [&str; 3] = ["admin", "member", "viewer"];

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
}

impl Forbidden {
    /// `ip`, `referrer`, `endpoint`, `project` or `environment`, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Ip => "ip",
            Forbidden::Referrer => "referrer",
            Forbidden::Endpoint => "endpoint",
            Forbidden::Project => "project",
            Forbidden::Environment => "environment",
        }
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Permissions

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
    fn any_resource(action: &'static str) -> Permission {
        Permission::from_segments(
            format!("*:{action}").into_boxed_str(),
            Segment::Any,
            Segment::Name(action.into()),
        )
    }

    /// `*`: everything.
    fn everything() -> Permission {
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

/// A requirement on a key's permissions: permissions joined with `AND` and `OR`
/// (keywords in any case), grouped with parentheses, `AND` binding tighter than `OR`:
/// `(docs:read OR docs:write) AND users:view`. A single permission is a query.
///
/// Bounded so that hostile input stays cheap: at most [`MAX_QUERY_LEN`] bytes,
/// [`MAX_QUERY_ATOMS`] permissions and [`MAX_QUERY_DEPTH`] levels of parentheses.
/// Serialises as its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PermissionQuery {
    text: Box<str>,
    /// The query as jumping code (see [`Step`]); evaluation starts at the first step.
    steps: Box<[Step]>,
}

/// One permission of a compiled query, and where evaluation goes next when the grants
/// allow it and when they do not: the index of another step, or [`ACCEPT`] / [`REJECT`].
///
/// Compiled from the parse tree in leaf order, so that evaluation decides the same
/// permissions in the same order as a short-circuiting walk of the tree (`a AND b`
/// skips `b` when `a` fails, `a OR b` when `a` holds), without recursion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    permission: Permission,
    on_true: u16,
    on_false: u16,
}

/// A [`Step`] target: the query holds.
const ACCEPT: u16 = u16::MAX;
/// A [`Step`] target: the query does not hold.
const REJECT: u16 = u16::MAX - 1;

/// A parsed query: a permission, or all / any of two or more sub-queries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Atom(Permission),
    All(Box<[Node]>),
    Any(Box<[Node]>),
}

impl PermissionQuery {
    /// Parses a query.
    ///
    /// # Errors
    /// [`InputError::InvalidQuery`] naming what is wrong and at which byte offset: an
    /// empty query or empty parentheses, an unclosed `(` or unmatched `)`, an operator
    /// without an operand on one side, two permissions without an operator between
    /// them, a bad permission, or a query over the size bounds.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let root = QueryParser::parse(text).map_err(InputError::InvalidQuery)?;
        let mut steps = Vec::with_capacity(root.atoms());
        root.compile(ACCEPT, REJECT, &mut steps);
        Ok(PermissionQuery {
            text: text.into(),
            steps: steps.into_boxed_slice(),
        })
    }

    /// True when `granted` satisfies the query. Does not allocate; short-circuits.
    pub fn evaluate(&self, granted: &PermissionSet) -> bool {
        self.evaluate_with(&|p: &Permission| granted.allows(p))
    }

    /// True when the query holds with `allows` deciding each permission; for grants
    /// kept apart (a role's set and a key's extra set) without building their union
    /// per request: `q.evaluate_with(&|p| role.allows(p) || extra.allows(p))`.
    pub fn evaluate_with<F: Fn(&Permission) -> bool>(&self, allows: &F) -> bool {
        let mut at = 0usize;
        // Every target is a later step or a verdict, so this runs at most once a step.
        while let Some(step) = self.steps.get(at) {
            match if allows(&step.permission) {
                step.on_true
            } else {
                step.on_false
            } {
                ACCEPT => return true,
                REJECT => return false,
                next => at = usize::from(next),
            }
        }
        false
    }

    /// The query text, as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Node {
    /// The number of permissions (leaves) in the tree.
    fn atoms(&self) -> usize {
        match self {
            Node::Atom(_) => 1,
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().map(Node::atoms).sum(),
        }
    }

    /// Appends the steps of this tree: its leaves, in order, each jumping to `on_true` or
    /// `on_false` once the tree's verdict is known, else to the next leaf to decide.
    /// Indexes fit a `u16`: a query has at most [`MAX_QUERY_ATOMS`] leaves.
    fn compile(&self, on_true: u16, on_false: u16, steps: &mut Vec<Step>) {
        match self {
            Node::Atom(p) => steps.push(Step {
                permission: p.clone(),
                on_true,
                on_false,
            }),
            Node::All(nodes) | Node::Any(nodes) => {
                let all = matches!(self, Node::All(_));
                let mut rest = nodes.iter().peekable();
                while let Some(node) = rest.next() {
                    // Where the next operand's first leaf will be.
                    let next = rest
                        .peek()
                        .map(|_| u16::try_from(steps.len() + node.atoms()).unwrap_or(REJECT));
                    match (next, all) {
                        (None, _) => node.compile(on_true, on_false, steps),
                        (Some(next), true) => node.compile(next, on_false, steps),
                        (Some(next), false) => node.compile(on_true, next, steps),
                    }
                }
            }
        }
    }
}

text_impls!(PermissionQuery);

impl From<Permission> for PermissionQuery {
    fn from(p: Permission) -> Self {
        PermissionQuery {
            text: p.text.clone(),
            steps: Box::new([Step {
                permission: p,
                on_true: ACCEPT,
                on_false: REJECT,
            }]),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Roles

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

/// The trait impls every allowlist shares: it is its source strings (`Debug`, equality,
/// serde through `Vec<String>`), whatever it precompiled from them.
macro_rules! source_list_impls {
    ($t:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.sources).finish()
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.sources == other.sources
            }
        }

        impl Eq for $t {}

        impl TryFrom<Vec<String>> for $t {
            type Error = InputError;

            fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
                $t::new(v)
            }
        }

        impl From<$t> for Vec<String> {
            fn from(list: $t) -> Vec<String> {
                list.sources
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// IP allowlist

/// The client addresses a key may be used from: IPv4 and IPv6 CIDR ranges; a bare
/// address is a single host (`/32`, `/128`). Empty means unrestricted.
///
/// An IPv4 address and its IPv4-mapped IPv6 form (`10.0.0.1` and `::ffff:10.0.0.1`) are
/// the same client: an address is allowed when some range contains it in either form.
/// So `::ffff:10.0.0.1` (as a dual-stack socket reports an IPv4 peer) matches
/// `10.0.0.0/8`, `10.0.0.1` matches `::ffff:10.0.0.0/104`, and a v6 range that covers
/// the whole mapped block (`::/0`, `::ffff:0:0/96`) covers every IPv4 client. Other
/// embeddings (IPv4-compatible `::a.b.c.d`, NAT64) are not folded.
///
/// A range written with host bits set (`10.1.2.3/8`) means its network (`10.0.0.0/8`).
/// Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct IpAllowlist {
    sources: Vec<String>,
    /// IPv4 ranges, plus the IPv4 part of every v6 range that overlaps `::ffff:0:0/96`.
    v4: Vec<Range<u32>>,
    /// IPv6 ranges as written.
    v6: Vec<Range<u128>>,
}

/// A network and its mask, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range<T> {
    network: T,
    mask: T,
}

/// `::ffff:0:0`, the start of the IPv4-mapped block (`::ffff:0:0/96`).
const MAPPED_V4_NETWORK: u128 = 0xffff_0000_0000;
/// The mask of a `/96`.
const MASK_96: u128 = !0xffff_ffff;

impl IpAllowlist {
    /// Parses a list of addresses and CIDR ranges.
    ///
    /// # Errors
    /// [`InputError::InvalidCidr`] for the first entry that is neither an address nor a
    /// range (a prefix longer than the address, whitespace, a zone id, ...).
    pub fn new<I, S>(entries: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = IpAllowlist::default();
        for entry in entries {
            let entry = entry.as_ref();
            let net = parse_cidr(entry).map_err(|why| InputError::InvalidCidr(format!("{}: {why}", quote(entry))))?;
            list.push(net);
            list.sources.push(entry.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty or some range contains `ip` (either form of an
    /// IPv4 / IPv4-mapped address, see the type's docs). Does not allocate.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => self.allows_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.allows_v4(v4),
                None => {
                    let a = u128::from(v6);
                    self.v6.iter().any(|r| a & r.mask == r.network)
                }
            },
        }
    }

    /// The entries, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    fn allows_v4(&self, ip: Ipv4Addr) -> bool {
        let a = u32::from(ip);
        self.v4.iter().any(|r| a & r.mask == r.network)
    }

    fn push(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) => self.v4.push(Range {
                network: u32::from(n.network()),
                mask: u32::from(n.netmask()),
            }),
            IpNet::V6(n) => {
                let network = u128::from(n.network());
                let mask = u128::from(n.netmask());
                self.v6.push(Range { network, mask });
                if let Some(r) = mapped_part(network, mask, n.prefix_len()) {
                    self.v4.push(r);
                }
            }
        }
    }
}

/// The IPv4 addresses whose mapped form lies in the v6 range `network/prefix_len`.
fn mapped_part(network: u128, mask: u128, prefix_len: u8) -> Option<Range<u32>> {
    if prefix_len <= 96 {
        // The range is at least as wide as the mapped block: it holds all of it or none.
        return (MAPPED_V4_NETWORK & mask == network).then_some(Range { network: 0, mask: 0 });
    }
    if network & MASK_96 != MAPPED_V4_NETWORK {
        return None;
    }
    // Both fit in the low 32 bits here: the high 96 bits of `network` are the mapped
    // prefix and the mask's low 32 bits are its IPv4 part.
    let low = |x: u128| u32::try_from(x & 0xffff_ffff).unwrap_or(0);
    Some(Range {
        network: low(network),
        mask: low(mask),
    })
}

fn parse_cidr(entry: &str) -> Result<IpNet, &'static str> {
    const HINT: &str = "expected an IP address or a CIDR range, e.g. 10.0.0.0/8, 203.0.113.7, 2001:db8::/32";
    if entry.is_empty() {
        return Err("it is empty; expected an IP address or a CIDR range, e.g. 10.0.0.0/8");
    }
    if entry.contains('/') {
        let net = IpNet::from_str(entry).map_err(|_| {
            if entry
                .split_once('/')
                .and_then(|(addr, _)| IpAddr::from_str(addr).ok())
                .is_some()
            {
                "the prefix length must be a number up to 32 (IPv4) or 128 (IPv6)"
            } else {
                HINT
            }
        })?;
        return Ok(net.trunc());
    }
    IpAddr::from_str(entry).map(IpNet::from).map_err(|_| HINT)
}

source_list_impls!(IpAllowlist);

// ---------------------------------------------------------------------------------------
// Referrer allowlist

/// The sites a key may be used from, by the host of the `Referer` or `Origin` header.
/// Empty means unrestricted.
///
/// Patterns, compared case-insensitively:
/// - `example.com`: exactly that host (not `www.example.com`);
/// - `*.example.com`: any subdomain at any depth (`a.example.com`, `a.b.example.com`),
///   but not the apex `example.com` itself: list both to allow both.
///
/// A pattern is a host name only: labels of 1 to 63 characters of `[a-z0-9_-]` (IDNs in
/// their `xn--` form), at most [`MAX_HOST_LEN`] bytes, no scheme, port, path or IPv6
/// literal. IPv4 literals (`127.0.0.1`) are accepted as exact hosts.
/// Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ReferrerAllowlist {
    sources: Vec<String>,
    /// Exact hosts, lower case.
    exact: Vec<Box<str>>,
    /// Subdomain suffixes with their leading dot (`.example.com`), lower case.
    suffixes: Vec<Box<str>>,
}

impl ReferrerAllowlist {
    /// Parses a list of host patterns.
    ///
    /// # Errors
    /// [`InputError::InvalidReferrer`] for the first pattern that is not a host name or
    /// `*.` and a host name.
    pub fn new<I, S>(patterns: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = ReferrerAllowlist::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let (wildcard, host) = parse_host_pattern(pattern)
                .map_err(|why| InputError::InvalidReferrer(format!("{}: {why}", quote(pattern))))?;
            let host = host.to_ascii_lowercase();
            if wildcard {
                list.suffixes.push(format!(".{host}").into_boxed_str());
            } else {
                list.exact.push(host.into_boxed_str());
            }
            list.sources.push(pattern.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty, or the host of `referrer` (a full URL or a bare
    /// host, as in a `Referer` or `Origin` header; see [`referrer_host`]) matches a
    /// pattern. A referrer whose host cannot be found is refused by a non-empty list;
    /// so is a missing header, passed as `""`. Does not allocate.
    ///
    /// One pass over the referrer finds and checks the host; an IPv6 literal is refused
    /// without parsing it, since no pattern can name one.
    pub fn allows(&self, referrer: &str) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        let bytes = referrer.trim_ascii().as_bytes();
        let Some(found) = scan_authority(bytes) else {
            return false;
        };
        // A bracketed host (an IPv6 literal, or junk) is never `host_ok`: `[` is no host
        // character. Patterns are host names, so it could not match anyway.
        if !found.host_ok || !found.port_ok {
            return false;
        }
        let Some(host) = bytes.get(found.host_start..found.name_end) else {
            return false;
        };
        self.exact.iter().any(|e| eq_lowered(host, e.as_bytes()))
            || self.suffixes.iter().any(|suffix| {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| eq_lowered(tail, suffix.as_bytes()))
            })
    }

    /// The patterns, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

/// The host of a `Referer` / `Origin` value: `scheme://[userinfo@]host[:port][/path]`,
/// `//host...`, or a bare `host[:port][/path]`; surrounding whitespace is ignored and
/// the host keeps its case (and a trailing dot, if any). An IPv6 literal comes back in
/// its brackets (`[::1]`).
///
/// `None` when no well-formed host is there: an empty host (`file:///x`, `null`'s
/// cousins like `about:blank`), a host with characters outside `[A-Za-z0-9_.-]` or an
/// empty label, a port that is not digits, userinfo without a scheme. Does not allocate.
pub fn referrer_host(referrer: &str) -> Option<&str> {
    let s = referrer.trim_ascii();
    let bytes = s.as_bytes();
    let found = scan_authority(bytes)?;
    if bytes.get(found.host_start) == Some(&b'[') {
        let bracketed = s.get(found.host_start + 1..found.end)?;
        let (inner, after) = bracketed.split_once(']')?;
        if !valid_port_suffix(after) || Ipv6Addr::from_str(inner).is_err() {
            return None;
        }
        return s.get(found.host_start..found.host_start + inner.len() + 2);
    }
    if !(found.host_ok && found.port_ok) {
        return None;
    }
    s.get(found.host_start..found.host_end)
}

/// What one pass over a referrer's authority found (see [`scan_authority`]).
#[derive(Debug, Clone, Copy)]
struct Authority {
    /// Where the host starts: after the authority marker (`scheme://`, `//`) and the
    /// last `@`.
    host_start: usize,
    /// Where the host ends: the first `:` after `host_start`, else `end`.
    host_end: usize,
    /// `host_end`, less a trailing dot.
    name_end: usize,
    /// Where the authority ends: the first `/ ? #` or `\` after its start, else the end.
    end: usize,
    /// The host (a trailing dot set aside) is labels of 1 to 63 characters of
    /// `[A-Za-z0-9_-]` joined by dots, at most [`MAX_HOST_LEN`] bytes.
    host_ok: bool,
    /// What follows the host is nothing, or `:` and up to 5 digits.
    port_ok: bool,
}

/// Finds and checks the host of a trimmed referrer in one pass over its authority, which
/// runs to the first `/ ? #` (or `\`, which browsers read as `/`): the host starts after
/// the last `@` and ends at the first `:` after that. `None` for an `@` in a referrer
/// that has no `scheme://` or `//` (a bare `user@host` is no URL).
// Inlined into its callers: the found fields then stay in registers.
#[inline(always)]
fn scan_authority(bytes: &[u8]) -> Option<Authority> {
    // `scheme://` or `//` opens an authority, which may carry userinfo.
    let (start, has_authority_marker) = if bytes.starts_with(b"https://") {
        (8, true)
    } else if bytes.starts_with(b"http://") {
        (7, true)
    } else {
        match scheme_len(bytes) {
            Some(len) if bytes.get(len..len + 3) == Some(b"://") => (len + 3, true),
            _ if bytes.starts_with(b"//") => (2, true),
            _ => (0, false),
        }
    };
    let mut i = start;
    // Each turn reads one `[userinfo@]` candidate host; an `@` starts the next turn.
    loop {
        let host_start = i;
        let mut label_start = i;
        let mut host_bad = false;
        // The host: runs of host characters, split by dots, up to `:` or the end.
        let host_end = loop {
            while bytes.get(i).is_some_and(|&b| byte_class(b) & HOST_CHAR != 0) {
                i += 1;
            }
            match bytes.get(i) {
                Some(b'.') => {
                    host_bad |= i == label_start || i - label_start > 63;
                    i += 1;
                    label_start = i;
                }
                Some(b'@') => break None,
                Some(&b) if b != b':' && byte_class(b) & AUTHORITY_END == 0 => {
                    host_bad = true;
                    i += 1;
                }
                _ => break Some(i),
            }
        };
        let Some(host_end) = host_end else {
            if !has_authority_marker {
                return None;
            }
            i += 1;
            continue;
        };
        // The port: digits after the `:`, up to the end of the authority.
        let mut port_bad = false;
        if bytes.get(i) == Some(&b':') {
            i += 1;
            loop {
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(&b) if b != b'@' && byte_class(b) & AUTHORITY_END == 0 => {
                        port_bad = true;
                        i += 1;
                    }
                    _ => break,
                }
            }
            if bytes.get(i) == Some(&b'@') {
                if !has_authority_marker {
                    return None;
                }
                i += 1;
                continue;
            }
        }
        // The last label is checked here; an empty one is an empty host or a trailing
        // dot, which is set aside.
        host_bad |= host_end - label_start > 63;
        let name_end = if host_end == label_start && host_end > host_start {
            host_end - 1
        } else {
            host_end
        };
        let name_len = name_end - host_start;
        return Some(Authority {
            host_start,
            host_end,
            name_end,
            end: i,
            host_ok: !host_bad && name_len > 0 && name_len <= MAX_HOST_LEN,
            port_ok: !port_bad && i - host_end <= 6,
        });
    }
}

/// True when `text` lower-cased is `lower`, which is lower case already. Eight bytes at
/// a time; `text` must be ASCII (a checked host is).
fn eq_lowered(text: &[u8], lower: &[u8]) -> bool {
    eq_by_words(text, lower, u8::to_ascii_lowercase, lowered_word)
}

/// `a == b`, eight bytes at a time, inline (no call to `bcmp` for these short strings).
fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    eq_by_words(a, b, |&x| x, |x| x)
}

/// True when `text` with `byte` / `word` applied is `other`: byte by byte below eight
/// bytes, else by whole words and then the last eight bytes (overlapping the previous
/// word). `word` must be `byte` on each of its bytes.
fn eq_by_words(text: &[u8], other: &[u8], byte: impl Fn(&u8) -> u8, word: impl Fn(u64) -> u64) -> bool {
    if text.len() != other.len() {
        return false;
    }
    if text.len() < 8 {
        return text.iter().zip(other).all(|(t, &o)| byte(t) == o);
    }
    let load = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let same = |at: usize| word(load(text, at)) == load(other, at);
    (0..text.len() / 8).all(|k| same(k * 8)) && same(text.len() - 8)
}

/// One in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The eight ASCII bytes of `w` lower-cased: `A-Z` gain 0x20, others stay.
fn lowered_word(w: u64) -> u64 {
    w | (in_range_word(w, b'A', b'Z') >> 2)
}

/// The eight ASCII bytes of `w` upper-cased: `a-z` lose 0x20, others stay.
fn uppered_word(w: u64) -> u64 {
    w & !(in_range_word(w, b'a', b'z') >> 2)
}

/// 0x80 in each byte of `w` (all ASCII) that lies in `low..=high`, 0 in the others.
fn in_range_word(w: u64, low: u8, high: u8) -> u64 {
    // Per byte (each below 0x80, so no carry crosses bytes): the high bit of `ge_low` is
    // set from `low` up, that of `gt_high` above `high`.
    let ge_low = w.wrapping_add(ONES * (0x80 - u64::from(low)));
    let gt_high = w.wrapping_add(ONES * (0x7f - u64::from(high)));
    ge_low & !gt_high & (ONES * 0x80)
}

/// Byte class: `[A-Za-z0-9_-]`, a host name character.
const HOST_CHAR: u8 = 1;
/// Byte class: `[A-Za-z0-9+.-]`, a scheme character.
const SCHEME_CHAR: u8 = 2;
/// Byte class: `/ ? # \`, the end of a URL's authority.
const AUTHORITY_END: u8 = 4;

/// The classes of every byte, so the per-request referrer scan costs one load a byte.
static BYTE_CLASSES: [u8; 256] = byte_classes();

#[allow(clippy::indexing_slicing)] // `i < 256` is the loop condition; a fault would fail the build
const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_alphanumeric() || b == b'-' {
            class |= HOST_CHAR | SCHEME_CHAR;
        }
        if b == b'_' {
            class |= HOST_CHAR;
        }
        if b == b'+' || b == b'.' {
            class |= SCHEME_CHAR;
        }
        if matches!(b, b'/' | b'?' | b'#' | b'\\') {
            class |= AUTHORITY_END;
        }
        table[i] = class;
        i += 1;
    }
    table
}

fn byte_class(b: u8) -> u8 {
    BYTE_CLASSES.get(usize::from(b)).copied().unwrap_or(0)
}

/// The length of the scheme `bytes` starts with (`[A-Za-z][A-Za-z0-9+.-]*`), if any.
fn scheme_len(bytes: &[u8]) -> Option<usize> {
    if !bytes.first()?.is_ascii_alphabetic() {
        return None;
    }
    let len = bytes
        .iter()
        .position(|&b| byte_class(b) & SCHEME_CHAR == 0)
        .unwrap_or(bytes.len());
    Some(len)
}

/// `""` or `:` and up to 5 digits.
fn valid_port_suffix(after: &str) -> bool {
    match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(port) => port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `(is_wildcard, host)` of a referrer pattern.
fn parse_host_pattern(pattern: &str) -> Result<(bool, &str), String> {
    if pattern.is_empty() {
        return Err("it is empty; use a host such as example.com or *.example.com".into());
    }
    if pattern.contains("://") || pattern.contains('/') {
        return Err("give the host only, without scheme or path (e.g. example.com or *.example.com)".into());
    }
    if pattern.contains(':') || pattern.contains('[') {
        return Err("ports and IPv6 literals are not part of a pattern; give a host name".into());
    }
    let (wildcard, host) = match pattern.strip_prefix("*.") {
        Some(host) => (true, host),
        None => (false, pattern),
    };
    if host.contains('*') {
        return Err(
            "a '*' may only stand for the leading labels, as in *.example.com (which does not match example.com)"
                .into(),
        );
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "the host is {} bytes long, the limit is {MAX_HOST_LEN}",
            host.len()
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(if c.is_ascii() {
            format!("character {c:?} is not allowed in a host name")
        } else {
            format!("character {c:?} is not allowed in a host name; write an international name in its xn-- form")
        });
    }
    if let Some(label) = host.split('.').find(|l| l.is_empty() || l.len() > 63) {
        return Err(if label.is_empty() {
            "a label is empty (leading, trailing or doubled '.')".into()
        } else {
            format!("the label {} is longer than 63 characters", quote(label))
        });
    }
    Ok((wildcard, host))
}

source_list_impls!(ReferrerAllowlist);

// ---------------------------------------------------------------------------------------
// Endpoint allowlist

/// The endpoints a key may call: entries `METHOD GLOB` such as `GET /v1/users/*`.
/// Empty means unrestricted.
///
/// - METHOD: a method name (letters, compared case-insensitively), or `*` or `ANY` for
///   every method. `GET` does not imply `HEAD`.
/// - GLOB: a [`PathGlob`], compared case-sensitively with the request path (its query
///   string and fragment ignored).
///
/// The path is matched as given: no percent-decoding and no removal of `.` / `..` or
/// doubled slashes. Pass the path your router resolved, so `/v1/users/../admin` cannot
/// slip through `/v1/users/**`. Serialises as its entries, as given.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EndpointAllowlist {
    sources: Vec<String>,
    rules: Vec<(Method, PathGlob)>,
}

/// The method part of an endpoint entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Any,
    /// Upper case, with its [`method_key`] when it has one.
    Named(Box<str>, Option<u64>),
}

/// A method name of up to 7 bytes as one integer: its bytes upper-cased, zero padded,
/// and its length in the top byte; `None` for a longer one. Two methods compare equal
/// case-insensitively exactly when their keys are equal (with a rule's method letters
/// only, upper-casing a request's method is what `eq_ignore_ascii_case` does).
fn method_key(method: &str) -> Option<u64> {
    let bytes = method.as_bytes();
    if bytes.len() > 7 {
        return None;
    }
    let packed = bytes.iter().rev().fold(0u64, |word, &b| (word << 8) | u64::from(b));
    if packed & (ONES * 0x80) != 0 {
        // Not ASCII: no method name. A length of 0xff stands for it, which no key has.
        return Some(0xff << 56);
    }
    Some(uppered_word(packed) | (u64::try_from(bytes.len()).unwrap_or(0) << 56))
}
impl EndpointAllowlist {
    /// Parses a list of `METHOD GLOB` entries.
    ///
    /// # Errors
    /// [`InputError::InvalidEndpoint`] for an entry that is not two words or whose method
    /// is not a method name, `*` or `ANY`; [`InputError::InvalidGlob`] for a bad glob.
    pub fn new<I, S>(entries: I) -> Result<Self, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = EndpointAllowlist::default();
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |why: &str| InputError::InvalidEndpoint(format!("{}: {why}", quote(entry)));
            let mut words = entry.split_ascii_whitespace();
            let (Some(method), Some(glob), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(match entry.split_ascii_whitespace().count() {
                    0 => "it is empty; write METHOD GLOB, e.g. GET /v1/users/*",
                    1 if entry.trim_start().starts_with('/') => {
                        "it has no method; write e.g. GET /v1/users/* (ANY or * for every method)"
                    }
                    1 => "it has no path glob; write METHOD GLOB, e.g. GET /v1/users/*",
                    _ => "write exactly METHOD GLOB, e.g. GET /v1/users/*; a glob cannot contain spaces",
                }));
            };
            let method = if method == "*" || method.eq_ignore_ascii_case("any") {
                Method::Any
            } else if method.len() <= MAX_METHOD_LEN && method.bytes().all(|b| b.is_ascii_alphabetic()) {
                Method::Named(method.to_ascii_uppercase().into_boxed_str(), method_key(method))
            } else {
                return Err(bad(&format!(
                    "the method {} is not a method name (letters only), * or ANY",
                    quote(method)
                )));
            };
            let glob = PathGlob::parse(glob)?;
            list.rules.push((method, glob));
            list.sources.push(entry.to_string());
        }
        Ok(list)
    }

    /// True when the list is empty, or some entry matches `method` (any case) and `path`
    /// (case-sensitive; a `?query` or `#fragment` is ignored). Does not allocate.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        if self.sources.is_empty() {
            return true;
        }
        let key = method_key(method);
        self.rules.iter().any(|(m, glob)| {
            let method_ok = match m {
                Method::Any => true,
                Method::Named(_, Some(rule_key)) => key == Some(*rule_key),
                Method::Named(name, None) => name.eq_ignore_ascii_case(method),
            };
            method_ok && glob.matches(path)
        })
    }

    /// The entries, as given.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// True when the list is empty (unrestricted).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

source_list_impls!(EndpointAllowlist);

/// A path glob: `/` then segments separated by `/`, where
/// - `*` within a segment matches any run of characters other than `/` (empty included,
///   so `/v1/users/*` matches `/v1/users/`), and may appear several times (`/f/*.*`);
/// - `**` as a whole segment matches any number of segments, none included:
///   `/v1/**` matches `/v1`, `/v1/`, `/v1/a` and `/v1/a/b`; `/a/**/z` matches `/a/z`;
/// - every other character matches itself, case-sensitively.
///
/// Refused: an empty glob, one not starting with `/`, `**` inside a segment (`/a**`,
/// `***`), whitespace or control characters, `?` and `#`, more than [`MAX_GLOB_LEN`]
/// bytes. Serialises as its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathGlob {
    text: Box<str>,
    /// The text every matching path starts with: the glob up to its first `*`, less
    /// the `/` before a leading `**` (which may match no segment). The whole glob when
    /// it has no `*`.
    literal_prefix: Box<str>,
    /// How a path is matched, decided from the glob's shape when it is parsed.
    shape: GlobShape,
    segments: Box<[GlobSegment]>,
}

/// The shape of a [`PathGlob`], for a match that needs no segment walk in the common
/// cases. In each, `literal_prefix` is the glob up to its only `*` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobShape {
    /// No `*`: the path is the glob.
    Exact,
    /// `{prefix}*`, the prefix ending with `/`: the path is the prefix and one segment.
    LastSegment,
    /// `{prefix}/**`: the path is the prefix, or the prefix and `/` and anything.
    Subtree,
    /// Anything else: the segment walk.
    General,
}

/// One segment of a [`PathGlob`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobSegment {
    /// `**`.
    AnyDepth,
    /// No `*`: compared as is.
    Literal(Box<str>),
    /// One or more `*`.
    Pattern(Box<str>),
}

impl PathGlob {
    /// Parses a glob.
    ///
    /// # Errors
    /// [`InputError::InvalidGlob`] naming what is wrong (see the type's docs).
    pub fn parse(glob: &str) -> Result<Self, InputError> {
        let bad = |why: &str| InputError::InvalidGlob(format!("{}: {why}", quote(glob)));
        if glob.is_empty() {
            return Err(bad("it is empty; a glob starts with /, e.g. /v1/users/*"));
        }
        if glob.len() > MAX_GLOB_LEN {
            return Err(bad(&format!(
                "it is {} bytes long, the limit is {MAX_GLOB_LEN}",
                glob.len()
            )));
        }
        let Some(body) = glob.strip_prefix('/') else {
            return Err(bad("it must start with /, e.g. /v1/users/*"));
        };
        if let Some((i, c)) = glob.char_indices().find(|(_, c)| c.is_whitespace() || c.is_control()) {
            return Err(bad(&format!("character {c:?} at offset {i} is not allowed")));
        }
        if glob.contains(['?', '#']) {
            return Err(bad(
                "? and # are not allowed: the query string and fragment are ignored when matching",
            ));
        }
        let mut segments = Vec::new();
        for segment in body.split('/') {
            segments.push(if segment == "**" {
                GlobSegment::AnyDepth
            } else if segment.contains("**") {
                return Err(bad(&format!(
                    "{} in segment {}: ** must be a whole segment, as in /v1/**, and * matches within one",
                    if segment.contains("***") { "***" } else { "**" },
                    quote(segment)
                )));
            } else if segment.contains('*') {
                GlobSegment::Pattern(segment.into())
            } else {
                GlobSegment::Literal(segment.into())
            });
        }
        let literal_prefix = match glob.find('*') {
            None => glob,
            Some(star) => {
                let before = glob.get(..star).unwrap_or("");
                match glob.get(star..) {
                    Some(from_star) if from_star.starts_with("**") => before.strip_suffix('/').unwrap_or(before),
                    _ => before,
                }
            }
        };
        let stars = glob.bytes().filter(|&b| b == b'*').count();
        let shape = if stars == 0 {
            GlobShape::Exact
        } else if stars == 1 && glob.ends_with("/*") {
            GlobShape::LastSegment
        } else if stars == 2 && glob.ends_with("/**") {
            GlobShape::Subtree
        } else {
            GlobShape::General
        };
        Ok(PathGlob {
            text: glob.into(),
            literal_prefix: literal_prefix.into(),
            shape,
            segments: segments.into_boxed_slice(),
        })
    }

    /// True when `path` (its `?query` or `#fragment` ignored) matches. A path that does
    /// not start with `/` never matches. Does not allocate.
    ///
    /// Runs in O(glob length × path length) at worst: each level (`**` across segments,
    /// `*` within one) keeps a single backtrack point, as in the classic wildcard match.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        let (prefix, path_bytes) = (self.literal_prefix.as_bytes(), path.as_bytes());
        let Some((head, rest)) = path_bytes.split_at_checked(prefix.len()) else {
            return false;
        };
        if !eq_bytes(head, prefix) {
            return false;
        }
        // `literal_prefix` holds no `?` or `#`, so a path starts with it exactly when the
        // path cut at its query does.
        match self.shape {
            GlobShape::Exact => matches!(rest.first(), None | Some(b'?' | b'#')),
            GlobShape::LastSegment => !matches!(rest.iter().find(|&&b| matches!(b, b'/' | b'?' | b'#')), Some(b'/')),
            GlobShape::Subtree => match rest.first() {
                None | Some(b'?' | b'#') => !self.literal_prefix.is_empty(),
                Some(b) => *b == b'/',
            },
            GlobShape::General => self.matches_segments(strip_query(path)),
        }
    }

    /// [`PathGlob::matches`] by walking the segments, for a path already cut at `?` / `#`.
    fn matches_segments(&self, path: &str) -> bool {
        if !path.starts_with(&*self.literal_prefix) {
            return false;
        }
        if self.literal_prefix.len() == self.text.len() {
            return path.len() == self.text.len();
        }
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let segments = &self.segments;
        // `pi`: next glob segment; `pos`: start of the next path segment (None: no more).
        let mut pi = 0usize;
        let mut pos = Some(0usize);
        // Where to resume after the latest `**`: the glob segment after it, and the path
        // position it has consumed up to.
        let mut resume: Option<(usize, Option<usize>)> = None;
        loop {
            match segments.get(pi) {
                Some(GlobSegment::AnyDepth) => {
                    pi += 1;
                    resume = Some((pi, pos));
                    continue;
                }
                Some(seg) => {
                    if let Some(start) = pos {
                        let (text, next) = segment_at(rest, start);
                        if seg.matches(text) {
                            pi += 1;
                            pos = next;
                            continue;
                        }
                    }
                }
                None if pos.is_none() => return true,
                None => {}
            }
            // Mismatch: let the latest `**` take one more segment, or fail.
            let Some((resume_pi, Some(start))) = resume else {
                return false;
            };
            let (_, next) = segment_at(rest, start);
            resume = Some((resume_pi, next));
            pi = resume_pi;
            pos = next;
        }
    }

    /// The glob, as it was parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl GlobSegment {
    fn matches(&self, text: &str) -> bool {
        match self {
            GlobSegment::AnyDepth => true,
            GlobSegment::Literal(lit) => **lit == *text,
            GlobSegment::Pattern(pattern) => wildcard_match(pattern.as_bytes(), text.as_bytes()),
        }
    }
}

/// `path` up to its first `?` or `#`.
fn strip_query(path: &str) -> &str {
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => path.get(..end).unwrap_or(path),
        None => path,
    }
}

/// The segment of `rest` starting at `start`, and where the one after it starts.
fn segment_at(rest: &str, start: usize) -> (&str, Option<usize>) {
    let tail = rest.get(start..).unwrap_or("");
    match tail.bytes().position(|b| b == b'/') {
        Some(i) => (tail.get(..i).unwrap_or(""), Some(start + i + 1)),
        None => (tail, None),
    }
}

/// `*` in `pattern` matches any run of bytes of `text` (which holds no `/`); other bytes
/// match themselves.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                p += 1;
                star = Some((p, t));
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                t += 1;
            }
            _ => {
                let Some((sp, st)) = star else {
                    return false;
                };
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
        }
    }
    pattern.get(p..).is_some_and(|tail| tail.iter().all(|&b| b == b'*'))
}

text_impls!(PathGlob);

// ---------------------------------------------------------------------------------------
// Private helpers

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
fn parse_permission(text: &str) -> Result<Permission, String> {
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

/// The input, quoted for an error: cut to 64 characters, a secret-shaped one to its
/// public start (see [`crate::redact`]).
fn quote(s: &str) -> String {
    crate::redact::quote(s)
}

/// A token of a permission query, with its byte offset.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: TokenKind<'a>,
    offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind<'a> {
    Open,
    Close,
    And,
    Or,
    Word(&'a str),
}

impl Token<'_> {
    /// How an error names the token.
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Open => format!("'(' at offset {}", self.offset),
            TokenKind::Close => format!("')' at offset {}", self.offset),
            TokenKind::And => format!("AND at offset {}", self.offset),
            TokenKind::Or => format!("OR at offset {}", self.offset),
            TokenKind::Word(w) => format!("{} at offset {}", quote(w), self.offset),
        }
    }
}

/// A recursive-descent parser over the tokens of a query:
///
/// ```text
/// query   = or EOF
/// or      = and ("OR" and)*
/// and     = primary ("AND" primary)*
/// primary = permission | "(" or ")"
/// ```
///
/// Recursion is bounded by [`MAX_QUERY_DEPTH`] (each level is one `(`).
struct QueryParser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    atoms: usize,
}

impl<'a> QueryParser<'a> {
    fn parse(text: &'a str) -> Result<Node, String> {
        if text.len() > MAX_QUERY_LEN {
            return Err(format!("it is {} bytes long, the limit is {MAX_QUERY_LEN}", text.len()));
        }
        let mut parser = QueryParser {
            tokens: tokenize(text),
            next: 0,
            atoms: 0,
        };
        if let Some(why) = parser.tokens.iter().find_map(unsupported_operator) {
            return Err(why);
        }
        if parser.tokens.is_empty() {
            return Err("the query is empty; write e.g. docs:read or (docs:read OR docs:write) AND users:view".into());
        }
        let root = parser.or(0, None)?;
        match parser.peek() {
            None => Ok(root),
            Some(t) if t.kind == TokenKind::Close => Err(format!("unmatched ')' at offset {}", t.offset)),
            Some(t) => Err(format!("missing AND or OR before {}", t.describe())),
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.next += 1;
        }
        t
    }

    /// `or` at paren `depth`; `after` is the token just before it (`(` or an operator),
    /// None at the start.
    fn or(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let mut nodes = vec![self.and(depth, after)?];
        while let Some(op) = self.peek().filter(|t| t.kind == TokenKind::Or) {
            self.next += 1;
            nodes.push(self.and(depth, Some(op))?);
        }
        Ok(collapse(nodes, Node::Any))
    }

    fn and(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let mut nodes = vec![self.primary(depth, after)?];
        while let Some(op) = self.peek().filter(|t| t.kind == TokenKind::And) {
            self.next += 1;
            nodes.push(self.primary(depth, Some(op))?);
        }
        Ok(collapse(nodes, Node::All))
    }

    fn primary(&mut self, depth: usize, after: Option<Token<'a>>) -> Result<Node, String> {
        let operand_missing = |what: &str| match after {
            Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                format!("{} has no right operand ({what})", op.describe())
            }
            Some(open) => format!("{} is followed by {what}", open.describe()),
            None => format!("the query starts with {what}"),
        };
        let Some(token) = self.bump() else {
            return Err(match after {
                Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                    format!("{} has no right operand (the query ends)", op.describe())
                }
                Some(open) => format!("unclosed {}", open.describe()),
                None => "the query is empty".into(),
            });
        };
        match token.kind {
            TokenKind::Word(word) => {
                self.atoms += 1;
                if self.atoms > MAX_QUERY_ATOMS {
                    return Err(format!(
                        "it names more than {MAX_QUERY_ATOMS} permissions (the {}th at offset {})",
                        self.atoms, token.offset
                    ));
                }
                parse_permission(word)
                    .map(Node::Atom)
                    .map_err(|why| format!("bad permission {} at offset {}: {why}", quote(word), token.offset))
            }
            TokenKind::Open => {
                if depth >= MAX_QUERY_DEPTH {
                    return Err(format!(
                        "parentheses nest deeper than {MAX_QUERY_DEPTH} levels at offset {}",
                        token.offset
                    ));
                }
                if let Some(close) = self.peek().filter(|t| t.kind == TokenKind::Close) {
                    return Err(format!("empty parentheses at offset {}", close.offset));
                }
                let inner = self.or(depth + 1, Some(token))?;
                match self.bump() {
                    Some(t) if t.kind == TokenKind::Close => Ok(inner),
                    Some(t) => Err(format!("missing AND or OR before {}", t.describe())),
                    None => Err(format!("unclosed {}", token.describe())),
                }
            }
            TokenKind::Close if depth == 0 && after.is_none() => {
                Err(format!("unmatched ')' at offset {}", token.offset))
            }
            TokenKind::Close => Err(operand_missing(&token.describe())),
            TokenKind::And | TokenKind::Or => Err(match after {
                Some(op) if matches!(op.kind, TokenKind::And | TokenKind::Or) => {
                    format!(
                        "{} is followed by another operator, {}",
                        op.describe(),
                        token.describe()
                    )
                }
                _ => format!("{} has no left operand", token.describe()),
            }),
        }
    }
}

/// An error for a word that looks like an operator this grammar does not have.
fn unsupported_operator(token: &Token<'_>) -> Option<String> {
    let TokenKind::Word(word) = token.kind else {
        return None;
    };
    let at = token.offset;
    match word {
        "&" | "&&" => Some(format!("unknown operator {word:?} at offset {at}; use AND")),
        "|" | "||" => Some(format!("unknown operator {word:?} at offset {at}; use OR")),
        _ if word == "!" || word.eq_ignore_ascii_case("not") => {
            Some(format!("negation ({word:?} at offset {at}) is not supported"))
        }
        _ => None,
    }
}

/// One node for one operand, else the operator over all of them.
fn collapse(mut nodes: Vec<Node>, op: fn(Box<[Node]>) -> Node) -> Node {
    if nodes.len() == 1
        && let Some(node) = nodes.pop()
    {
        return node;
    }
    op(nodes.into_boxed_slice())
}

/// Splits a query into parentheses, keywords and words (anything else between
/// whitespace and parentheses, to be parsed as a permission).
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let offset = text.len() - trimmed.len();
        let mut chars = trimmed.chars();
        let (kind, tail) = match chars.next() {
            None => return tokens,
            Some('(') => (TokenKind::Open, chars.as_str()),
            Some(')') => (TokenKind::Close, chars.as_str()),
            Some(_) => {
                let end = trimmed
                    .find(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')')
                    .unwrap_or(trimmed.len());
                let (word, tail) = trimmed.split_at_checked(end).unwrap_or((trimmed, ""));
                let kind = if word.eq_ignore_ascii_case("and") {
                    TokenKind::And
                } else if word.eq_ignore_ascii_case("or") {
                    TokenKind::Or
                } else {
                    TokenKind::Word(word)
                };
                (kind, tail)
            }
        };
        tokens.push(Token { kind, offset });
        rest = tail;
    }
}

// ---------------------------------------------------------------------------------------
// Users

/// A person who owns personal tokens, with a role in each project they belong to. A
/// personal token acts with its user's current role in the token's project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id (1 to 128 characters of `[A-Za-z0-9_.@+-]`).
    pub id: String,
    /// Project -> role.
    pub memberships: std::collections::BTreeMap<String, RoleName>,
}

impl User {
    /// A user with no memberships yet, its id checked.
    ///
    /// # Errors
    /// [`InputError::InvalidUser`].
    pub fn new(id: impl Into<String>) -> Result<Self, InputError> {
        let id = id.into();
        validate_user_id(&id)?;
        Ok(User {
            id,
            memberships: std::collections::BTreeMap::new(),
        })
    }

    /// The user's role in `project`, if a member.
    pub fn role_in(&self, project: &str) -> Option<&RoleName> {
        self.memberships.get(project)
    }
}

/// Checks a user id: 1 to 128 characters of `[A-Za-z0-9_.@+-]`.
///
/// # Errors
/// [`InputError::InvalidUser`].
pub fn validate_user_id(id: &str) -> Result<(), InputError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidUser(format!(
            "{}: use 1 to 128 characters of A-Z a-z 0-9 _ . @ + -",
            quote(id)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn perm(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    fn set(items: &[&str]) -> PermissionSet {
        PermissionSet::parse(items).unwrap()
    }

    fn query_err(q: &str) -> String {
        match PermissionQuery::parse(q) {
            Err(InputError::InvalidQuery(msg)) => msg,
            other => panic!("{q:?} gave {other:?}"),
        }
    }

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

    #[test]
    fn query_precedence_and_keywords() {
        let granted = set(&["docs:read", "users:view"]);
        for (q, expected) in [
            ("docs:read", true),
            ("docs:write", false),
            ("(docs:read OR docs:write) AND users:view", true),
            ("(docs:write OR docs:read) and users:view", true),
            ("docs:write OR docs:read AND users:view", true),
            // AND binds tighter: this is docs:read OR (docs:write AND x:y).
            ("docs:read or docs:write AND x:y", true),
            ("(docs:read OR docs:write) AND x:y", false),
            ("docs:read AND users:view AND x:y", false),
            ("x:y OR y:z OR users:view", true),
            ("((docs:read))", true),
            ("(docs:read)AND(users:view)", true),
            ("  docs:read\tAnD\nusers:view  ", true),
            ("*", false),
            ("docs:*", false),
        ] {
            let parsed = PermissionQuery::parse(q).unwrap();
            assert_eq!(parsed.evaluate(&granted), expected, "{q}");
            assert_eq!(parsed.as_str(), q);
        }
        assert!(PermissionQuery::parse("*").unwrap().evaluate(&set(&["*"])));
        let q = PermissionQuery::parse("a:b AND c:d").unwrap();
        let role = set(&["a:b"]);
        let extra = set(&["c:d"]);
        assert!(!q.evaluate(&role));
        assert!(q.evaluate_with(&|p| role.allows(p) || extra.allows(p)));
        assert!(PermissionQuery::from(perm("a:b")).evaluate(&role));
    }

    #[test]
    fn query_errors_name_the_problem() {
        for (q, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("()", "empty parentheses at offset 1"),
            ("(docs:read", "unclosed '(' at offset 0"),
            ("((docs:read)", "unclosed '(' at offset 0"),
            ("docs:read)", "unmatched ')' at offset 9"),
            (")", "unmatched ')' at offset 0"),
            ("(a:b))", "unmatched ')' at offset 5"),
            ("AND docs:read", "AND at offset 0 has no left operand"),
            ("docs:read AND", "AND at offset 10 has no right operand"),
            ("docs:read OR", "OR at offset 10 has no right operand"),
            ("a:b AND OR c:d", "followed by another operator, OR at offset 8"),
            ("(OR a:b)", "OR at offset 1 has no left operand"),
            ("(a:b AND)", "AND at offset 5 has no right operand"),
            ("a:b c:d", "missing AND or OR before \"c:d\" at offset 4"),
            ("(a:b) (c:d)", "missing AND or OR before '(' at offset 6"),
            ("(a:b c:d)", "missing AND or OR before \"c:d\" at offset 5"),
            ("docs:read AND Users:view", "bad permission \"Users:view\" at offset 14"),
            ("docs:read AND users", "no ':'"),
            ("a:b && c:d", "unknown operator \"&&\" at offset 4; use AND"),
            ("a:b | c:d", "use OR"),
            ("NOT a:b", "negation"),
            ("a:b AND $", "bad permission \"$\""),
        ] {
            let msg = query_err(q);
            assert!(msg.contains(needle), "{q:?}: {msg}");
        }
    }

    #[test]
    fn query_bounds() {
        let atoms = |n: usize| (0..n).map(|i| format!("p:a{i}")).collect::<Vec<_>>().join(" OR ");
        assert!(PermissionQuery::parse(&atoms(MAX_QUERY_ATOMS)).is_ok());
        assert!(query_err(&atoms(MAX_QUERY_ATOMS + 1)).contains("more than 64 permissions"));
        let nested = |n: usize| format!("{}a:b{}", "(".repeat(n), ")".repeat(n));
        assert!(PermissionQuery::parse(&nested(MAX_QUERY_DEPTH)).is_ok());
        assert!(query_err(&nested(MAX_QUERY_DEPTH + 1)).contains("deeper than 16"));
        // Hostile input is refused before any real work, and errors stay short.
        let huge = "(".repeat(1_000_000);
        let msg = query_err(&huge);
        assert!(msg.contains("limit is 8192"), "{msg}");
        let long_word = "x".repeat(5_000);
        assert!(query_err(&long_word).len() < 300);
    }

    #[test]
    fn ip_allowlist_table() {
        let list = IpAllowlist::new([
            "10.0.0.0/8",
            "192.168.1.7",
            "2001:db8::/32",
            "::1",
            "::ffff:172.16.0.0/108",
            "100.64.1.2/16",
        ])
        .unwrap();
        for (ip, expected) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::1", true),
            ("::2", false),
            // IPv4-mapped clients match IPv4 ranges.
            ("::ffff:10.0.0.1", true),
            ("::ffff:192.168.1.7", true),
            ("::ffff:11.0.0.1", false),
            // IPv4 clients match mapped v6 ranges.
            ("172.16.5.5", true),
            ("::ffff:172.16.5.5", true),
            ("172.32.0.1", false),
            // Host bits in a range are ignored.
            ("100.64.200.1", true),
            // IPv4-compatible addresses are not folded.
            ("::10.0.0.1", false),
        ] {
            assert_eq!(list.allows(ip.parse().unwrap()), expected, "{ip}");
        }
        assert!(IpAllowlist::default().allows("1.2.3.4".parse().unwrap()));
        assert!(IpAllowlist::new(Vec::<String>::new()).unwrap().is_empty());
        let v6_only = IpAllowlist::new(["2001:db8::/32"]).unwrap();
        assert!(!v6_only.allows("10.0.0.1".parse().unwrap()));
        let all_v6 = IpAllowlist::new(["::/0"]).unwrap();
        assert!(
            all_v6.allows("10.0.0.1".parse().unwrap()),
            "::/0 covers the mapped block"
        );
        let v4_only = IpAllowlist::new(["0.0.0.0/0"]).unwrap();
        assert!(!v4_only.allows("2001:db8::1".parse().unwrap()));
        assert!(v4_only.allows("::ffff:1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn ip_allowlist_refuses_bad_entries() {
        for (entry, needle) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix length"),
            ("2001:db8::/129", "prefix length"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0/8", "expected an IP address"),
            ("10.0.0.256", "expected an IP address"),
            (" 10.0.0.1", "expected an IP address"),
            ("fe80::1%eth0", "expected an IP address"),
            ("example.com", "expected an IP address"),
        ] {
            match IpAllowlist::new(["10.0.0.0/8", entry]) {
                Err(InputError::InvalidCidr(msg)) => assert!(msg.contains(needle), "{entry:?}: {msg}"),
                other => panic!("{entry:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn referrer_host_extraction() {
        for (referrer, host) in [
            ("https://example.com/page?x=1", Some("example.com")),
            ("https://Example.COM", Some("Example.COM")),
            ("http://user:pass@example.com:8080/x", Some("example.com")),
            ("https://example.com:443", Some("example.com")),
            ("https://example.com.", Some("example.com.")),
            ("https://example.com#frag", Some("example.com")),
            ("https://example.com?q", Some("example.com")),
            ("//cdn.example.com/x.js", Some("cdn.example.com")),
            ("example.com", Some("example.com")),
            ("example.com:3000/path", Some("example.com")),
            ("example.com/redirect?to=https://evil.com", Some("example.com")),
            ("  https://example.com  ", Some("example.com")),
            ("http://[::1]:8080/", Some("[::1]")),
            ("http://127.0.0.1:5000/", Some("127.0.0.1")),
            ("android-app://com.example.app/", Some("com.example.app")),
            ("", None),
            ("null", Some("null")),
            ("about:blank", None),
            ("file:///etc/passwd", None),
            ("https://", None),
            ("https://example.com:http/", None),
            ("https://exa mple.com/", None),
            ("https://a..example.com/", None),
            ("https://.example.com/", None),
            ("https://evil.com\\.example.com/", Some("evil.com")),
            ("mailto:x@example.com", None),
            ("user@example.com", None),
            ("https://[not-v6]/", None),
            ("https://ex%61mple.com/", None),
        ] {
            assert_eq!(referrer_host(referrer), host, "{referrer:?}");
        }
    }

    #[test]
    fn lowered_words_and_comparison() {
        for b in 0u8..0x80 {
            for filler in [b'a', b'Z', b'0', b'.'] {
                let mut word = [filler; 8];
                for at in 0..8 {
                    word[at] = b;
                    let lowered = lowered_word(u64::from_le_bytes(word)).to_le_bytes();
                    assert_eq!(lowered, word.map(|c| c.to_ascii_lowercase()), "{b:#x} at {at}");
                    let uppered = uppered_word(u64::from_le_bytes(word)).to_le_bytes();
                    assert_eq!(uppered, word.map(|c| c.to_ascii_uppercase()), "{b:#x} at {at}");
                    word[at] = filler;
                }
            }
        }
        for (text, lower, expected) in [
            ("", "", true),
            ("Ab", "ab", true),
            ("Ab", "aB", false),
            (".EXAMPLE.com", ".example.com", true),
            (".EXAMPLE.con", ".example.com", false),
            ("XAMPLE.COM", "xample.com", true),
            ("EXAMPLE", "example", true),
            ("EXAMPLE-", "example_", false),
            ("abcdefgh", "abcdefgh", true),
            ("abcdefghi", "abcdefgh", false),
        ] {
            assert_eq!(
                eq_lowered(text.as_bytes(), lower.as_bytes()),
                expected,
                "{text} {lower}"
            );
        }
    }

    #[test]
    fn referrer_allowlist_table() {
        let list = ReferrerAllowlist::new(["example.com", "*.Example.org", "localhost", "127.0.0.1"]).unwrap();
        for (referrer, expected) in [
            ("https://example.com/", true),
            ("https://EXAMPLE.com/x", true),
            ("https://example.com./x", true),
            ("example.com", true),
            ("https://www.example.com/", false),
            ("https://notexample.com/", false),
            ("https://example.com.evil.net/", false),
            ("https://evil.net/?example.com", false),
            ("https://example.com@evil.net/", false),
            ("https://a.example.org/", true),
            ("https://a.b.EXAMPLE.ORG:8443/", true),
            ("https://example.org/", false),
            ("https://xexample.org/", false),
            ("https://.example.org/", false),
            ("http://localhost:3000/", true),
            ("http://127.0.0.1/", true),
            ("http://[::1]/", false),
            ("", false),
            ("not a url", false),
        ] {
            assert_eq!(list.allows(referrer), expected, "{referrer:?}");
        }
        assert!(ReferrerAllowlist::default().allows(""));
        assert!(ReferrerAllowlist::default().allows("garbage ::"));
    }

    #[test]
    fn referrer_allowlist_refuses_bad_patterns() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_host = format!("{}com", "abcdefghi.".repeat(26));
        for (pattern, needle) in [
            ("", "empty"),
            ("https://example.com", "host only"),
            ("example.com/path", "host only"),
            ("example.com:8080", "ports"),
            ("[::1]", "IPv6"),
            ("*", "leading labels"),
            ("*example.com", "leading labels"),
            ("a.*.example.com", "leading labels"),
            ("*.*.example.com", "leading labels"),
            ("exa mple.com", "not allowed"),
            ("bücher.de", "xn--"),
            ("example..com", "empty"),
            (".example.com", "empty"),
            ("example.com.", "empty"),
            ("*.", "empty"),
            (long_label.as_str(), "longer than 63"),
            (long_host.as_str(), "limit is 253"),
        ] {
            match ReferrerAllowlist::new([pattern]) {
                Err(InputError::InvalidReferrer(msg)) => assert!(msg.contains(needle), "{pattern:?}: {msg}"),
                other => panic!("{pattern:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn path_glob_table() {
        for (glob, path, expected) in [
            ("/v1/users/*", "/v1/users/42", true),
            ("/v1/users/*", "/v1/users/", true),
            ("/v1/users/*", "/v1/users", false),
            ("/v1/users/*", "/v1/users/42/keys", false),
            ("/v1/users/*", "/V1/users/42", false),
            ("/v1/users/*", "/v1/users/42?x=/a/b", true),
            ("/v1/users/*", "/v1/users/42#a/b", true),
            ("/v1/**", "/v1", true),
            ("/v1/**", "/v1/", true),
            ("/v1/**", "/v1/a/b/c", true),
            ("/v1/**", "/v10", false),
            ("/v1/**", "/v2/a", false),
            ("/a/**/z", "/a/z", true),
            ("/a/**/z", "/a/b/c/z", true),
            ("/a/**/z", "/a/b/c/zz", false),
            ("/a/**/*.json", "/a/x/y.json", true),
            ("/a/**/*.json", "/a/y.json", true),
            ("/a/**/*.json", "/a/x/y.xml", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/**", "", false),
            ("/**", "relative/path", false),
            ("/", "/", true),
            ("/", "/a", false),
            ("/files/*-*.txt", "/files/a-b.txt", true),
            ("/files/*-*.txt", "/files/ab.txt", false),
            ("/*/b/**/c/*", "/a/b/c/d", true),
            ("/*/b/**/c/*", "/a/b/x/c/y/c/d", true),
            ("/*/b/**/c/*", "/a/b/x/c", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
        ] {
            assert_eq!(
                PathGlob::parse(glob).unwrap().matches(path),
                expected,
                "{glob} vs {path:?}"
            );
        }
    }

    #[test]
    fn path_glob_refuses_bad_globs() {
        for (glob, needle) in [
            ("", "empty"),
            ("v1/users", "start with /"),
            ("*", "start with /"),
            ("/v1/***", "***"),
            ("/v1/a**", "whole segment"),
            ("/v1/**b/c", "whole segment"),
            ("/v1/ users", "not allowed"),
            ("/v1/users?x=1", "query string"),
            ("/v1#x", "query string"),
        ] {
            match PathGlob::parse(glob) {
                Err(InputError::InvalidGlob(msg)) => assert!(msg.contains(needle), "{glob:?}: {msg}"),
                other => panic!("{glob:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            PathGlob::parse(&format!("/{}", "a".repeat(MAX_GLOB_LEN))),
            Err(InputError::InvalidGlob(_))
        ));
    }

    #[test]
    fn endpoint_allowlist_table() {
        let list =
            EndpointAllowlist::new(["GET /v1/users/*", "post /v1/jobs", "ANY /v1/public/**", "* /health"]).unwrap();
        for (method, path, expected) in [
            ("GET", "/v1/users/1", true),
            ("get", "/v1/users/1", true),
            ("HEAD", "/v1/users/1", false),
            ("POST", "/v1/users/1", false),
            ("POST", "/v1/jobs", true),
            ("Post", "/v1/jobs?async=1", true),
            ("GET", "/v1/jobs", false),
            ("DELETE", "/v1/public/a/b", true),
            ("PATCH", "/health", true),
            ("GET", "/healthz", false),
        ] {
            assert_eq!(list.allows(method, path), expected, "{method} {path}");
        }
        assert!(EndpointAllowlist::default().allows("DELETE", "/anything"));
    }

    #[test]
    fn endpoint_allowlist_refuses_bad_entries() {
        for (entry, variant_glob, needle) in [
            ("", false, "empty"),
            ("/v1/users", false, "no method"),
            ("GET", false, "no path glob"),
            ("GET /v1/a b", false, "exactly METHOD GLOB"),
            ("G3T /v1", false, "not a method name"),
            ("GET v1/users", true, "start with /"),
            ("GET /v1/***", true, "***"),
            ("GET /v1/users?x", true, "query string"),
        ] {
            match EndpointAllowlist::new([entry]) {
                Err(InputError::InvalidEndpoint(msg)) if !variant_glob => {
                    assert!(msg.contains(needle), "{entry:?}: {msg}")
                }
                Err(InputError::InvalidGlob(msg)) if variant_glob => assert!(msg.contains(needle), "{entry:?}: {msg}"),
                other => panic!("{entry:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn forbidden_names() {
        for (f, s) in [
            (Forbidden::Ip, "ip"),
            (Forbidden::Referrer, "referrer"),
            (Forbidden::Endpoint, "endpoint"),
            (Forbidden::Project, "project"),
            (Forbidden::Environment, "environment"),
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
