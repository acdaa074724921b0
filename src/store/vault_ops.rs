//! The provider-key vault on a [`Store`]: customers' own keys to other services, sealed
//! with [`crate::vault`] (envelope encryption under a versioned master key), every put,
//! delete, rewrap and read recorded in the event log without the value.

use std::sync::PoisonError;

use zeroize::Zeroizing;

use crate::error::{Error, OpenError, Result, StateError};
use crate::index::Index;
use crate::record::{DEFAULT_PROJECT, validate_project};
use crate::secret::Secret;
use crate::vault::{self, MasterKey, MasterKeyring, VaultError};

use super::commit::{Op, Outcome, Rewrap};
use super::{Config, Store, files};

/// Secret versions rewrapped per commit during a master-key rotation.
const REWRAP_CHUNK: usize = 256;

/// A stored secret version: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The project.
    pub project: String,
    /// The name.
    pub name: String,
    /// The version (1, 2, ...).
    pub version: u32,
    /// Unix ms it was put.
    pub created_at: i64,
    /// The master key version its data key is wrapped under.
    pub master_version: u32,
}

impl Store {
    /// Stores `secret` as the next version of `name` in `project` (default `default`).
    /// Rotating a provider key is a put: the next get returns it, no restart.
    ///
    /// # Errors
    /// [`crate::InputError`] for an empty or oversized secret or a bad name;
    /// [`VaultError::NoMasterKey`]; [`StateError::AdminRequired`] when the store requires
    /// an admin key for vault writes (use [`Store::vault_put_as`]).
    pub fn vault_put(&self, project: Option<&str>, name: &str, secret: &[u8]) -> Result<SecretInfo> {
        if self.require_admin {
            return Err(StateError::AdminRequired("writing to the vault").into());
        }
        self.vault_put_unchecked(project, name, secret)
    }

    /// [`Store::vault_put`] on the authority of an admin key of this store.
    ///
    /// # Errors
    /// [`StateError::AdminRequired`] when `admin_key` is not a valid admin key; as
    /// [`Store::vault_put`].
    pub fn vault_put_as(
        &self,
        admin_key: &str,
        project: Option<&str>,
        name: &str,
        secret: &[u8],
    ) -> Result<SecretInfo> {
        self.authorize_admin(admin_key, "writing to the vault")?;
        self.vault_put_unchecked(project, name, secret)
    }

    fn vault_put_unchecked(&self, project: Option<&str>, name: &str, secret: &[u8]) -> Result<SecretInfo> {
        let project = project.unwrap_or(DEFAULT_PROJECT);
        validate_project(project)?;
        vault::validate_secret_name(name)?;
        vault::validate_secret_len(secret.len())?;
        let op = Op::VaultPut {
            project: project.to_string(),
            name: name.to_string(),
            plaintext: Zeroizing::new(secret.to_vec()),
        };
        match self.submit(op)? {
            Outcome::Count(version) => self
                .vault_list(Some(project))?
                .into_iter()
                .find(|s| s.name == name && s.version == version)
                .ok_or_else(|| StateError::UnknownSecret(format!("{project}/{name}")).into()),
            _ => Err(Error::UnexpectedReply { request: "vault put" }),
        }
    }

    /// The latest (or a given) version of a secret, decrypted, as a zeroizing [`Secret`].
    /// The read is recorded in the event log, without the value.
    ///
    /// # Errors
    /// [`StateError::UnknownSecret`]; [`VaultError`] for a missing, retired or wrong
    /// master key or a damaged blob.
    pub fn vault_get(&self, project: Option<&str>, name: &str, version: Option<u32>) -> Result<Secret> {
        let project = project.unwrap_or(DEFAULT_PROJECT);
        validate_project(project)?;
        vault::validate_secret_name(name)?;
        let versions = self.shared.index.vault_versions(project, name)?;
        let found = match version {
            Some(v) => versions.into_iter().find(|(n, _)| *n == v),
            None => versions.into_iter().next_back(),
        };
        let Some((version, entry)) = found else {
            let what = version.map_or(format!("{project}/{name}"), |v| format!("{project}/{name} version {v}"));
            return Err(StateError::UnknownSecret(what).into());
        };
        let secret = {
            let ring = self.shared.vault_ring.read().unwrap_or_else(PoisonError::into_inner);
            let ring = ring.as_ref().ok_or(VaultError::NoMasterKey)?;
            vault::open(ring, &entry.sealed, project, name, version)?.into_secret()?
        };
        self.submit(Op::VaultRead {
            project: project.to_string(),
            name: name.to_string(),
            version,
        })?;
        Ok(secret)
    }

    /// The current master key version (`None`: no master key configured).
    pub fn vault_master_version(&self) -> Option<u32> {
        let ring = self.shared.vault_ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.as_ref().map(|r| r.current().version())
    }

    /// Every stored secret version (of one project, or all), never a value.
    ///
    /// # Errors
    /// [`Error::Index`].
    pub fn vault_list(&self, project: Option<&str>) -> Result<Vec<SecretInfo>> {
        Ok(self
            .shared
            .index
            .vault_all()?
            .into_iter()
            .filter(|(p, ..)| project.is_none_or(|want| want == p))
            .map(|(project, name, version, entry)| SecretInfo {
                master_version: entry.sealed.master_version(),
                created_at: entry.created_at,
                project,
                name,
                version,
            })
            .collect())
    }

    /// Deletes every version of a secret.
    ///
    /// # Errors
    /// [`StateError::UnknownSecret`]; [`StateError::AdminRequired`] when the store
    /// requires an admin key for vault writes.
    pub fn vault_delete(&self, project: Option<&str>, name: &str) -> Result<()> {
        if self.require_admin {
            return Err(StateError::AdminRequired("writing to the vault").into());
        }
        let project = project.unwrap_or(DEFAULT_PROJECT);
        validate_project(project)?;
        vault::validate_secret_name(name)?;
        self.submit(Op::VaultDelete {
            project: project.to_string(),
            name: name.to_string(),
        })
        .map(drop)
    }

    /// Adds `new` as the current master key and rewraps every secret's data key under it,
    /// without decrypting any secret (on this thread, so
    /// [`vault::data_decryptions_on_this_thread`] proves it). `progress(done, total)` is
    /// called as it goes. Returns how many secret versions were rewrapped.
    ///
    /// # Errors
    /// [`VaultError`] (a duplicate or lower version; [`VaultError::NoMasterKey`] when the
    /// vault registered a master key but the store was opened without it), log errors.
    pub fn vault_rotate_master(&self, new: MasterKey, mut progress: impl FnMut(usize, usize)) -> Result<usize> {
        let (version, check) = (new.version(), new.check_value());
        {
            let mut ring = self.shared.vault_ring.write().unwrap_or_else(PoisonError::into_inner);
            match ring.as_mut() {
                Some(r) => {
                    if version <= r.current().version() {
                        return Err(VaultError::DuplicateMasterKey(version).into());
                    }
                    r.insert(new)?;
                }
                // Secrets already sealed need the current key to be rewrapped.
                None if !self.shared.index.vault_masters()?.0.is_empty() => {
                    return Err(VaultError::NoMasterKey.into());
                }
                None => *ring = Some(MasterKeyring::new(new)),
            }
        }
        // A development store keeps its master keys beside the data: keep the new one too,
        // before anything is wrapped under it.
        if self.dev_master_file {
            let ring = self.shared.vault_ring.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(ring) = ring.as_ref() {
                files::write_master_file(&self.path, ring)?;
            }
        }
        self.submit(Op::VaultAddMaster { version, check })?;
        let all = self.shared.index.vault_all()?;
        let stale: Vec<_> = {
            let ring = self.shared.vault_ring.read().unwrap_or_else(PoisonError::into_inner);
            let ring = ring.as_ref().ok_or(VaultError::NoMasterKey)?;
            all.into_iter().filter(|(.., e)| ring.needs_rewrap(&e.sealed)).collect()
        };
        let total = stale.len();
        let mut done = 0;
        progress(0, total);
        for chunk in stale.chunks(REWRAP_CHUNK) {
            let rewraps = {
                let ring = self.shared.vault_ring.read().unwrap_or_else(PoisonError::into_inner);
                let ring = ring.as_ref().ok_or(VaultError::NoMasterKey)?;
                chunk
                    .iter()
                    .map(|(project, name, version, entry)| {
                        Ok(Rewrap {
                            new: vault::rewrap(ring, &entry.sealed, project, name, *version)?,
                            old: entry.sealed.clone(),
                            project: project.clone(),
                            name: name.clone(),
                            version: *version,
                        })
                    })
                    .collect::<Result<Vec<_>, VaultError>>()?
            };
            self.submit(Op::VaultRewrap(rewraps))?;
            done += chunk.len();
            progress(done, total);
        }
        Ok(total)
    }

    /// Retires master key versions below `min`: they may no longer decrypt. Refused while
    /// a secret is still wrapped under one of them (rotate first).
    ///
    /// # Errors
    /// [`VaultError::WouldRetireCurrent`], [`StateError::MasterKeyInUse`].
    pub fn vault_retire_below(&self, min: u32) -> Result<()> {
        let still = self
            .vault_list(None)?
            .into_iter()
            .filter(|s| s.master_version < min)
            .count();
        if still > 0 {
            return Err(StateError::MasterKeyInUse(still).into());
        }
        {
            let mut ring = self.shared.vault_ring.write().unwrap_or_else(PoisonError::into_inner);
            ring.as_mut()
                .ok_or(VaultError::NoMasterKey)?
                .set_min_decrypt_version(min)?;
        }
        self.submit(Op::VaultMinVersion(min)).map(drop)
    }
}

/// The master keyring for a store being opened: from the config, else a development
/// store's `master.key`; checked against the check values the vault registered, with the
/// vault's minimum decryption version applied.
///
/// No master key is `Ok(None)`, even when the vault holds secrets: only the vault's own
/// operations need the key (they answer [`VaultError::NoMasterKey`]), so a store opened to
/// list, verify or serve keys never has to hold it.
///
/// # Errors
/// [`OpenError::WrongMasterKey`] for a key given that is not the one the vault registered.
pub(crate) fn load_ring(path: &std::path::Path, config: &Config, index: &Index) -> Result<Option<MasterKeyring>> {
    let ring = match &config.master_keys {
        Some(ring) => Some(ring.clone()),
        None => files::read_master_file(path)?,
    };
    let Some(mut ring) = ring else {
        return Ok(None);
    };
    let (registered, min) = index.vault_masters()?;
    for version in ring.versions() {
        let key = ring.get(version)?;
        if registered
            .get(&version)
            .is_some_and(|check| *check != key.check_value())
        {
            return Err(OpenError::WrongMasterKey(version).into());
        }
    }
    if min > ring.min_decrypt_version() {
        ring.set_min_decrypt_version(min)?;
    }
    Ok(Some(ring))
}

/// Parses `CREDSTORE_MASTER_KEY`: 64 hex characters (version 1), or `VERSION:HEX` pairs
/// separated by commas.
///
/// # Errors
/// [`crate::InputError::InvalidMasterKey`], [`VaultError::DuplicateMasterKey`].
pub fn parse_master_keys(text: &str) -> Result<MasterKeyring> {
    let mut ring: Option<MasterKeyring> = None;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let key = match part.split_once(':') {
            Some((v, hex)) => {
                let version = v.parse().map_err(|_| crate::InputError::InvalidMasterKeyVersion)?;
                MasterKey::from_hex(version, hex)?
            }
            None => MasterKey::from_hex(1, part)?,
        };
        match ring.as_mut() {
            Some(r) => r.insert(key)?,
            None => ring = Some(MasterKeyring::new(key)),
        }
    }
    ring.ok_or_else(|| crate::InputError::InvalidMasterKey.into())
}
