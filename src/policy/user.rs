//! Users: [`User`], who owns personal tokens and holds a role in each project they
//! belong to, and [`validate_user_id`].

use serde::{Deserialize, Serialize};

use super::{RoleName, quote};
use crate::error::InputError;

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
