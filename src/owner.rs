//! Owners: the customer, team or tenant a key may belong to.
//!
//! An owner has an id, a name and metadata, and may have rate limits and a budget of its
//! own. Those are shared by every key of the owner and apply on top of each key's own: a
//! request passes only if the key's limits and budget and the owner's all pass, and
//! nothing is consumed unless all do. Owners are set through the log (`owner.set`) and
//! kept in the index's directory; a key is tied to its owner by a `key.owned` event in the
//! commit that creates it (`KeyRecord` cannot grow a field: old logs must still read).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::limits::{Budget, RateLimit, check_limits};
use crate::record::{KeyId, validate_metadata, validate_name};

/// The longest owner id.
pub const MAX_OWNER_ID_LEN: usize = 64;

/// An owner as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The id (`[A-Za-z0-9_.:@-]`, 1 to 64 characters).
    pub id: String,
    /// A human name (the id when none was given).
    pub name: String,
    /// Metadata, shown in every decision of the owner's keys.
    pub metadata: BTreeMap<String, String>,
    /// Rate limits shared by every key of the owner.
    pub rate_limits: Vec<RateLimit>,
    /// A budget shared by every key of the owner.
    pub budget: Option<Budget>,
}

impl Owner {
    /// The owner as JSON for people and scripts: `{"id", "name", "metadata",
    /// "rate_limits", "budget"}`, the budget as [`Budget::to_json`] shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "metadata": self.metadata,
            "rate_limits": self.rate_limits,
            "budget": self.budget.as_ref().map(Budget::to_json),
        })
    }

    /// The id its budget has in a fleet's lease tables (key ids never hold a `/`).
    pub(crate) fn budget_id(&self) -> String {
        format!("owner/{}", self.id)
    }
}

/// A change to an owner (or the settings of a new one); `None` leaves a field as it is
/// (for a new owner: the name is its id, the rest empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerUpdate {
    /// A new name.
    pub name: Option<String>,
    /// New metadata, replacing the old.
    pub metadata: Option<BTreeMap<String, String>>,
    /// New rate limits, replacing the old.
    pub rate_limits: Option<Vec<RateLimit>>,
    /// A new budget (`Some(None)`: none).
    pub budget: Option<Option<Budget>>,
}

impl OwnerUpdate {
    /// Checks every field given.
    ///
    /// # Errors
    /// [`InputError`] naming the bad field.
    pub fn check(&self) -> Result<(), InputError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(metadata) = &self.metadata {
            validate_metadata(metadata)?;
        }
        if let Some(limits) = &self.rate_limits {
            check_limits(limits)?;
        }
        if let Some(Some(budget)) = self.budget {
            Budget::new(budget.cap, budget.period)?;
        }
        Ok(())
    }

    /// `owner` (or a new owner `id`) with the changes made.
    pub(crate) fn apply(&self, id: &str, owner: Option<Owner>) -> Owner {
        let mut owner = owner.unwrap_or_else(|| Owner {
            id: id.to_string(),
            name: id.to_string(),
            metadata: BTreeMap::new(),
            rate_limits: Vec::new(),
            budget: None,
        });
        if let Some(name) = &self.name {
            owner.name.clone_from(name);
        }
        if let Some(metadata) = &self.metadata {
            owner.metadata.clone_from(metadata);
        }
        if let Some(limits) = &self.rate_limits {
            owner.rate_limits.clone_from(limits);
        }
        if let Some(budget) = self.budget {
            owner.budget = budget;
        }
        owner
    }
}

/// Checks an owner id: 1 to 64 characters of `[A-Za-z0-9_.:@-]`, and not shaped like a
/// key id (`credits ID` takes either).
///
/// # Errors
/// [`InputError::InvalidOwner`].
pub fn validate_owner_id(id: &str) -> Result<(), InputError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_OWNER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
        && KeyId::parse(id).is_err();
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidOwner(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_are_checked() {
        for good in ["acme", "cus_123", "team.a", "t:1", "a@b", "x-y"] {
            assert!(validate_owner_id(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_OWNER_ID_LEN + 1);
        for bad in ["", "a/b", "a b", "é", long.as_str(), "key_0000000000000000000001"] {
            assert!(validate_owner_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let first = OwnerUpdate {
            name: Some("Acme".into()),
            ..OwnerUpdate::default()
        }
        .apply("acme", None);
        assert_eq!(first.name, "Acme");
        let limit = RateLimit::parse("10/1m").unwrap();
        let second = OwnerUpdate {
            rate_limits: Some(vec![limit.clone()]),
            ..OwnerUpdate::default()
        }
        .apply("acme", Some(first));
        assert_eq!((second.name.as_str(), second.rate_limits.len()), ("Acme", 1));
        let fresh = OwnerUpdate::default().apply("beta", None);
        assert_eq!(fresh.name, "beta");
    }
}
