//! The store's directory: its plans, custom roles and users. Each is set and deleted
//! through the log like keys; the live copy is one `ArcSwap<Directory>` replaced as a
//! whole on every change, so a verify sees either the old directory or the new one.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dashboard::{LinkEntry, SessionEntry};
use crate::lifecycle::{Lifecycle, Scope};
use crate::limits::Plan;
use crate::owner::Owner;
use crate::policy::{BUILTIN_ROLES, Role, User, builtin_role};

/// Plans, roles (the built-ins and the store's own) and users, by name.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    pub plans: BTreeMap<String, Arc<Plan>>,
    pub roles: BTreeMap<String, Role>,
    pub users: BTreeMap<String, User>,
    /// Owners, by id.
    pub owners: BTreeMap<String, Arc<Owner>>,
    /// This host's share of every rate limit (all of it but on a fleet host).
    pub share: crate::limits::Shares,
    /// The latest changes of `share` that may have handed this host parts other hosts had
    /// (when those hosts were last seen alive, in ns, and the share before), newest last,
    /// at most [`SHARE_CHANGES_KEPT`]: a part gained is taken as consumed then, to refill,
    /// for a key this host meets afresh.
    pub share_changes: Vec<(i64, crate::limits::Shares)>,
    /// Lifecycle policies, by scope.
    pub lifecycle: crate::lifecycle::Policies,
    /// Customers' dashboard links, by their token's hash (hex).
    pub dash_links: BTreeMap<String, Arc<LinkEntry>>,
    /// Customers' dashboard sessions, by their token's hash (hex).
    pub dash_sessions: BTreeMap<String, Arc<SessionEntry>>,
}

/// How many changes of a host's share [`Directory::share_changes`] keeps.
pub const SHARE_CHANGES_KEPT: usize = 8;

impl Default for Directory {
    /// An empty directory with the built-in roles.
    fn default() -> Self {
        let roles = BUILTIN_ROLES
            .iter()
            .filter_map(|name| builtin_role(name).map(|r| (name.to_string(), r)))
            .collect();
        Directory {
            plans: BTreeMap::new(),
            roles,
            users: BTreeMap::new(),
            owners: BTreeMap::new(),
            share: crate::limits::Shares::default(),
            share_changes: Vec::new(),
            lifecycle: crate::lifecycle::Policies::default(),
            dash_links: BTreeMap::new(),
            dash_sessions: BTreeMap::new(),
        }
    }
}

impl Directory {
    /// Puts `share` in force. When another host was last seen alive `others_seen` ago, a
    /// part gained may have been spent by it until then: the change is kept (at most
    /// [`SHARE_CHANGES_KEPT`]) so that the gain starts as consumed at that time.
    pub fn change_share(
        &mut self,
        share: crate::limits::Shares,
        others_seen: Option<std::time::Duration>,
        now_ns: i64,
    ) {
        let before = std::mem::replace(&mut self.share, share);
        if let Some(ago) = others_seen {
            let ago = i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX);
            self.share_changes.push((now_ns.saturating_sub(ago), before));
            if self.share_changes.len() > SHARE_CHANGES_KEPT {
                self.share_changes.remove(0);
            }
        }
    }

    /// Builds a directory from stored entries.
    pub fn from_entries(entries: impl IntoIterator<Item = DirEntry>) -> Self {
        let mut dir = Directory::default();
        for entry in entries {
            dir.set(entry);
        }
        dir
    }

    /// Applies a change: set an entry, or delete one by key.
    pub fn apply(&mut self, key: &DirKey, entry: Option<&DirEntry>) {
        match entry {
            Some(e) => self.set(e.clone()),
            None => {
                match key.kind {
                    DirKind::Plan => self.plans.remove(&key.name).map(drop),
                    DirKind::Role => self.roles.remove(&key.name).map(drop),
                    DirKind::User => self.users.remove(&key.name).map(drop),
                    DirKind::Owner => self.owners.remove(&key.name).map(drop),
                    DirKind::DashLink => self.dash_links.remove(&key.name).map(drop),
                    DirKind::DashSession => self.dash_sessions.remove(&key.name).map(drop),
                    DirKind::Lifecycle => {
                        if let Some(scope) = Scope::from_name(&key.name) {
                            self.lifecycle.clear(&scope);
                        }
                        None
                    }
                };
            }
        }
    }

    fn set(&mut self, entry: DirEntry) {
        match entry {
            DirEntry::Plan(p) => {
                self.plans.insert(p.name.clone(), Arc::new(p));
            }
            DirEntry::Role(r) => {
                self.roles.insert(r.name().to_string(), r);
            }
            DirEntry::User(u) => {
                self.users.insert(u.id.clone(), u);
            }
            DirEntry::Owner(o) => {
                self.owners.insert(o.id.clone(), Arc::new(o));
            }
            DirEntry::Lifecycle(scope, policy) => self.lifecycle.set(scope, policy),
            DirEntry::DashLink(link) => {
                self.dash_links.insert(link.hash.to_hex(), Arc::new(link));
            }
            DirEntry::DashSession(session) => {
                self.dash_sessions.insert(session.hash.to_hex(), Arc::new(session));
            }
        }
    }
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DirKind {
    Plan,
    Role,
    User,
    Owner,
    Lifecycle,
    /// A customers' dashboard link.
    DashLink,
    /// A customers' dashboard session.
    DashSession,
}

/// A directory entry's key: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DirKey {
    pub kind: DirKind,
    pub name: String,
}

impl DirKey {
    /// The key in the index's `directory` tree: a kind letter, `/`, the name.
    pub fn encode(&self) -> Vec<u8> {
        let letter = match self.kind {
            DirKind::Plan => b'p',
            DirKind::Role => b'r',
            DirKind::User => b'u',
            DirKind::Owner => b'o',
            DirKind::Lifecycle => b'l',
            DirKind::DashLink => b'd',
            DirKind::DashSession => b's',
        };
        let mut out = vec![letter, b'/'];
        out.extend_from_slice(self.name.as_bytes());
        out
    }
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DirEntry {
    Plan(Plan),
    Role(Role),
    User(User),
    /// Appended last: bincode numbers variants.
    Owner(Owner),
    /// A scope's lifecycle policy (its key's name is [`Scope::name`]).
    Lifecycle(Scope, Lifecycle),
    /// A customers' dashboard link (its key's name is its hash in hex).
    DashLink(LinkEntry),
    /// A customers' dashboard session (its key's name is its token's hash in hex).
    DashSession(SessionEntry),
}

impl DirEntry {
    /// Its key.
    pub fn key(&self) -> DirKey {
        match self {
            DirEntry::Plan(p) => DirKey {
                kind: DirKind::Plan,
                name: p.name.clone(),
            },
            DirEntry::Role(r) => DirKey {
                kind: DirKind::Role,
                name: r.name().to_string(),
            },
            DirEntry::User(u) => DirKey {
                kind: DirKind::User,
                name: u.id.clone(),
            },
            DirEntry::Owner(o) => DirKey {
                kind: DirKind::Owner,
                name: o.id.clone(),
            },
            DirEntry::Lifecycle(scope, _) => DirKey {
                kind: DirKind::Lifecycle,
                name: scope.name(),
            },
            DirEntry::DashLink(link) => DirKey {
                kind: DirKind::DashLink,
                name: link.hash.to_hex(),
            },
            DirEntry::DashSession(session) => DirKey {
                kind: DirKind::DashSession,
                name: session.hash.to_hex(),
            },
        }
    }
}
