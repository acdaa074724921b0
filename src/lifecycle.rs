//! Lifecycle policy: how long a key may live, how long it may lie unused, and the least
//! grace a rotation gives, per store, project or key format (DESIGN.md, "Lifecycle
//! policy").
//!
//! A policy is set and cleared through the log (`lifecycle.set`, `lifecycle.cleared`) and
//! kept in the directory like plans and roles. Each setting is resolved on its own, the
//! most specific scope that sets it winning: a key's format, then its project, then the
//! store. A store-wide unused expiry thus still applies to a format whose policy sets
//! only a maximum lifetime.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::record::KeyRecord;

/// The longest any lifecycle duration may be: 100 years, in ms.
pub const MAX_POLICY_MS: i64 = 100 * 366 * 86_400_000;

/// Where a lifecycle policy applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every key of the store.
    Store,
    /// The keys of one project.
    Project(String),
    /// The keys of one format, by its prefix (`sk_live_`).
    Format(String),
}

impl Scope {
    /// The scope's name in the directory and in JSON: `store`, `project/NAME`,
    /// `format/PREFIX`.
    pub fn name(&self) -> String {
        match self {
            Scope::Store => "store".to_string(),
            Scope::Project(p) => format!("project/{p}"),
            Scope::Format(f) => format!("format/{f}"),
        }
    }

    /// The scope [`Scope::name`] names.
    pub fn from_name(name: &str) -> Option<Scope> {
        if name == "store" {
            return Some(Scope::Store);
        }
        if let Some(p) = name.strip_prefix("project/") {
            return Some(Scope::Project(p.to_string()));
        }
        name.strip_prefix("format/").map(|f| Scope::Format(f.to_string()))
    }

    /// A scope from `--project` or `--format` (neither: the store), checked.
    ///
    /// # Errors
    /// [`InputError::InvalidProject`], [`InputError::InvalidPrefix`], or
    /// [`InputError::InvalidPolicy`] when both are given.
    pub fn from_options(project: Option<&str>, format: Option<&str>) -> Result<Scope, InputError> {
        match (project, format) {
            (Some(_), Some(_)) => Err(InputError::InvalidPolicy(
                "give a project or a format, not both: a policy has one scope".into(),
            )),
            (Some(p), None) => {
                crate::record::validate_project(p)?;
                Ok(Scope::Project(p.to_string()))
            }
            (None, Some(f)) => {
                crate::token::validate_prefix(f)?;
                Ok(Scope::Format(f.to_string()))
            }
            (None, None) => Ok(Scope::Store),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Store => f.write_str("the store"),
            Scope::Project(p) => write!(f, "project {}", crate::redact::quote(p)),
            Scope::Format(p) => write!(f, "format {}", crate::redact::quote(p)),
        }
    }
}

/// One scope's lifecycle settings; `None` leaves a setting to a wider scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The longest a key may live, ms: a key created without an expiry gets one this far
    /// ahead; an expiry beyond it is refused; an older key is refused as expired.
    pub max_lifetime_ms: Option<i64>,
    /// A key unused this long (since its last use, or its creation) is refused as
    /// expired, ms.
    pub unused_expiry_ms: Option<i64>,
    /// The least grace a rotation gives the old key, ms: a shorter one is raised to it.
    pub min_grace_ms: Option<i64>,
}

impl Lifecycle {
    /// Checks that every setting is positive and at most [`MAX_POLICY_MS`], and that at
    /// least one is set.
    ///
    /// # Errors
    /// [`InputError::InvalidPolicy`] naming the setting.
    pub fn validate(&self) -> Result<(), InputError> {
        let settings = [
            ("max lifetime", self.max_lifetime_ms),
            ("unused expiry", self.unused_expiry_ms),
            ("min grace", self.min_grace_ms),
        ];
        if settings.iter().all(|(_, v)| v.is_none()) {
            return Err(InputError::InvalidPolicy(
                "set at least one of max lifetime, unused expiry, min grace".into(),
            ));
        }
        for (name, value) in settings {
            if let Some(ms) = value
                && !(1..=MAX_POLICY_MS).contains(&ms)
            {
                return Err(InputError::InvalidPolicy(format!(
                    "{name} must be between 1ms and 36600d, not {ms}ms"
                )));
            }
        }
        Ok(())
    }

    /// The settings of `scope` as JSON, durations as text (`366d`), `null` when unset.
    pub fn to_json_in(&self, scope: &Scope) -> serde_json::Value {
        serde_json::json!({
            "scope": scope.name(),
            "max_lifetime": self.max_lifetime_ms.map(fmt_duration),
            "unused_expiry": self.unused_expiry_ms.map(fmt_duration),
            "min_grace": self.min_grace_ms.map(fmt_duration),
        })
    }
}

/// Every scope's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    by_scope: BTreeMap<Scope, Lifecycle>,
}

/// One setting in force for a key, and the scope it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value, ms.
    pub ms: i64,
    /// The scope whose policy set it.
    pub scope: Scope,
}

/// The settings in force for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// The maximum lifetime.
    pub max_lifetime: Option<Setting>,
    /// The unused expiry.
    pub unused_expiry: Option<Setting>,
    /// The least rotation grace.
    pub min_grace: Option<Setting>,
}

impl Policies {
    /// Sets a scope's policy.
    pub fn set(&mut self, scope: Scope, policy: Lifecycle) {
        self.by_scope.insert(scope, policy);
    }

    /// Clears a scope's policy; whether it had one.
    pub fn clear(&mut self, scope: &Scope) -> bool {
        self.by_scope.remove(scope).is_some()
    }

    /// A scope's own policy.
    pub fn get(&self, scope: &Scope) -> Option<&Lifecycle> {
        self.by_scope.get(scope)
    }

    /// Whether no scope has a policy.
    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    /// Every scope's policy, store first, then projects, then formats.
    pub fn iter(&self) -> impl Iterator<Item = (&Scope, &Lifecycle)> {
        self.by_scope.iter()
    }

    /// The settings in force for a key of `project` in the format with `prefix`: each
    /// from the most specific scope that sets it (format, project, store).
    pub fn effective(&self, project: &str, prefix: &str) -> Effective {
        if self.by_scope.is_empty() {
            return Effective::default();
        }
        let scopes = [
            Scope::Format(prefix.to_string()),
            Scope::Project(project.to_string()),
            Scope::Store,
        ];
        let pick = |get: fn(&Lifecycle) -> Option<i64>| {
            scopes.iter().find_map(|scope| {
                let ms = self.by_scope.get(scope).and_then(get)?;
                Some(Setting {
                    ms,
                    scope: scope.clone(),
                })
            })
        };
        Effective {
            max_lifetime: pick(|l| l.max_lifetime_ms),
            unused_expiry: pick(|l| l.unused_expiry_ms),
            min_grace: pick(|l| l.min_grace_ms),
        }
    }

    /// The settings in force for `record`.
    pub fn for_record(&self, record: &KeyRecord) -> Effective {
        self.effective(&record.project, record.format.prefix())
    }
}

impl Effective {
    /// The key's deadline, ms (`i64::MAX`: none), and why: its own expiry, or its
    /// creation plus the maximum lifetime, whichever comes first.
    pub fn deadline(&self, record: &KeyRecord) -> (i64, ExpiredBecause) {
        let own = record.expires_at.unwrap_or(i64::MAX);
        let by_policy = self
            .max_lifetime
            .as_ref()
            .map_or(i64::MAX, |s| record.created_at.saturating_add(s.ms));
        if by_policy < own {
            (by_policy, ExpiredBecause::MaxLifetime)
        } else {
            (own, ExpiredBecause::ExpiresAt)
        }
    }

    /// The unused expiry, ms (`i64::MAX`: none).
    pub fn unused_ms(&self) -> i64 {
        self.unused_expiry.as_ref().map_or(i64::MAX, |s| s.ms)
    }
}

/// Why a key expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpiredBecause {
    /// Its own expiry passed.
    ExpiresAt,
    /// It is older than its lifecycle policy's maximum lifetime.
    MaxLifetime,
    /// It was not used for its lifecycle policy's unused expiry.
    Unused,
}

impl ExpiredBecause {
    /// As JSON says it: `expires_at`, `max_lifetime`, `unused`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiredBecause::ExpiresAt => "expires_at",
            ExpiredBecause::MaxLifetime => "max_lifetime",
            ExpiredBecause::Unused => "unused",
        }
    }
}

/// A duration in ms as the largest whole unit that fits it exactly (`366d`, `90m`,
/// `1500ms`), the form [`crate::clock::parse_duration`] reads.
pub fn fmt_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (unit, name) in UNITS {
        if ms != 0 && ms % unit == 0 {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_comes_from_the_most_specific_scope_that_sets_it() {
        let mut p = Policies::default();
        p.set(
            Scope::Store,
            Lifecycle {
                max_lifetime_ms: Some(10),
                unused_expiry_ms: Some(20),
                min_grace_ms: Some(30),
            },
        );
        p.set(
            Scope::Project("web".into()),
            Lifecycle {
                max_lifetime_ms: Some(11),
                ..Lifecycle::default()
            },
        );
        p.set(
            Scope::Format("sk_live_".into()),
            Lifecycle {
                unused_expiry_ms: Some(21),
                ..Lifecycle::default()
            },
        );
        let e = p.effective("web", "sk_live_");
        assert_eq!(
            e.max_lifetime.map(|s| (s.ms, s.scope)),
            Some((11, Scope::Project("web".into())))
        );
        assert_eq!(e.unused_expiry.map(|s| s.ms), Some(21));
        assert_eq!(e.min_grace.map(|s| (s.ms, s.scope)), Some((30, Scope::Store)));
        let other = p.effective("default", "ak_");
        assert_eq!(other.max_lifetime.map(|s| s.ms), Some(10));
        assert!(p.clear(&Scope::Store));
        assert!(!p.clear(&Scope::Store));
        assert_eq!(p.effective("default", "ak_"), Effective::default());
    }

    #[test]
    fn bad_policies_are_refused_and_durations_print_as_they_parse() {
        assert!(Lifecycle::default().validate().is_err());
        let too_long = Lifecycle {
            max_lifetime_ms: Some(MAX_POLICY_MS + 1),
            ..Lifecycle::default()
        };
        assert!(too_long.validate().is_err());
        assert!(Scope::from_options(Some("web"), Some("sk_")).is_err());
        for ms in [366 * 86_400_000, 3_600_000, 90_000, 1_500, 7] {
            assert_eq!(crate::clock::parse_duration(&fmt_duration(ms)), Ok(ms));
        }
    }
}
