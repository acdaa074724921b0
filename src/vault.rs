//! The cryptographic core of the provider-key vault: envelope encryption of customer
//! secrets under versioned master keys.
//!
//! Every secret is encrypted with XChaCha20-Poly1305 under its own random 32-byte data key
//! (DEK), with a random 24-byte nonce. The DEK is wrapped (encrypted) with
//! XChaCha20-Poly1305 under a key-encryption key derived from a versioned [`MasterKey`],
//! with a nonce of its own. Both encryptions carry associated data that binds the blob to
//! its record (project, name, secret version) and to the blob format, and the wrap also
//! binds the master-key version, so a blob copied to another record, or a header edited to
//! name another master key, does not open.
//!
//! [`rewrap`] moves a secret to the current master key by unwrapping and rewrapping only its
//! DEK: the secret's ciphertext is never decrypted and stays byte for byte the same.
//!
//! This module is pure: no I/O, no clock. The store persists [`SealedSecret`]s in its event
//! log and holds the [`MasterKeyring`]. The byte layout and the associated data are
//! specified in `docs/SECURITY.md` ("Provider-key vault").
//!
//! ```
//! use credstore::vault::{self, MasterKey, MasterKeyring};
//!
//! # fn main() -> Result<(), credstore::vault::VaultError> {
//! let mut ring = MasterKeyring::new(MasterKey::random(1)?);
//! let sealed = vault::seal(&ring, "acme", "openai", 1, b"sk-provider-key")?;
//! let bytes = sealed.to_bytes();
//!
//! // Rotate the master key: rewrap without decrypting, then retire version 1.
//! ring.insert(MasterKey::random(2)?)?;
//! let sealed = vault::rewrap(&ring, &vault::SealedSecret::from_bytes(&bytes)?, "acme", "openai", 1)?;
//! ring.set_min_decrypt_version(2)?;
//!
//! let secret = vault::open(&ring, &sealed, "acme", "openai", 1)?;
//! assert_eq!(secret.expose(), b"sk-provider-key");
//! // The same blob under another name does not open.
//! assert!(vault::open(&ring, &sealed, "acme", "anthropic", 1).is_err());
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::InputError;
use crate::record::validate_project;
use crate::secret::Secret;

/// The largest secret the vault accepts, in bytes (64 KiB).
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// The longest secret name, in bytes.
pub const MAX_SECRET_NAME_LEN: usize = 128;

/// The format byte of the only blob layout so far.
pub const FORMAT_V1: u8 = 1;

/// Length of a key (master, key-encryption or data key), in bytes.
pub const KEY_LEN: usize = 32;

/// Length of an XChaCha20-Poly1305 nonce, in bytes.
pub const NONCE_LEN: usize = 24;

/// Length of a Poly1305 tag, in bytes.
pub const TAG_LEN: usize = 16;

/// Bytes before the data ciphertext: format, master version, wrap nonce, wrapped DEK and its
/// tag, data nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN + KEY_LEN + TAG_LEN + NONCE_LEN;

/// The shortest valid blob: the header and a one-byte secret with its tag.
pub const MIN_BLOB_LEN: usize = HEADER_LEN + 1 + TAG_LEN;

/// The longest valid blob: the header and a [`MAX_SECRET_LEN`]-byte secret with its tag.
pub const MAX_BLOB_LEN: usize = HEADER_LEN + MAX_SECRET_LEN + TAG_LEN;

/// Domain string that opens the associated data of every vault encryption.
const AD_DOMAIN: &[u8] = b"credstore.vault";

/// Purpose byte of the associated data when wrapping a data key under a master key.
const PURPOSE_WRAP: u8 = 1;

/// Purpose byte of the associated data when encrypting the secret under its data key.
const PURPOSE_DATA: u8 = 2;

/// BLAKE3 key-derivation context of the key-encryption key derived from a master key.
const KEK_CONTEXT: &str = "credstore 2025-06 vault key-encryption key v1";

/// BLAKE3 key-derivation context of a master key's public check value.
const CHECK_CONTEXT: &str = "credstore 2025-06 vault master key check value v1";

/// Everything sealing, opening or rewrapping a secret can fail with.
///
/// No variant carries a secret, a key or a secret name's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The caller's input was refused (bad project, secret name, size, or master key text).
    #[error("invalid input: {0}")]
    Input(#[from] InputError),
    /// The blob names a master key version the keyring does not hold.
    #[error("master key version {version} is not loaded; supply it to open this secret")]
    UnknownMasterKey {
        /// The version the blob was wrapped under.
        version: u32,
    },
    /// The blob is wrapped under a master key version below the minimum decryption version.
    #[error(
        "master key version {version} is retired (minimum decryption version {min}): \
         the secret was not rewrapped before its master key was retired"
    )]
    RetiredMasterKey {
        /// The version the blob was wrapped under.
        version: u32,
        /// The keyring's minimum decryption version.
        min: u32,
    },
    /// A master key with this version is already in the keyring.
    #[error("master key version {0} is already loaded")]
    DuplicateMasterKey(u32),
    /// The minimum decryption version would retire the current master key.
    #[error("cannot set the minimum decryption version to {min}: the current master key is version {current}")]
    WouldRetireCurrent {
        /// The requested minimum.
        min: u32,
        /// The current (highest) master key version.
        current: u32,
    },
    /// No master key version follows the current one (`u32::MAX` reached).
    #[error("no master key version after {0}")]
    VersionsExhausted(u32),
    /// The data key did not unwrap: wrong master key, or the blob was altered or belongs
    /// to another record.
    #[error(
        "the data key did not unwrap under master key version {version}: wrong master key, \
         or the blob was altered or belongs to another record"
    )]
    UnwrapFailed {
        /// The master key version that was tried.
        version: u32,
    },
    /// The data key unwrapped but the secret did not decrypt: the data part of the blob was
    /// altered or comes from another blob.
    #[error("the secret did not decrypt: the blob was altered or belongs to another record")]
    DecryptFailed,
    /// Encryption refused its input. Cannot happen for secrets within [`MAX_SECRET_LEN`];
    /// reported rather than panicking.
    #[error("encryption failed")]
    EncryptFailed,
    /// A blob shorter than the format allows (truncated).
    #[error("sealed secret is {len} bytes, at least {min} expected (truncated?)")]
    BlobTooShort {
        /// Its length.
        len: usize,
        /// The least valid length.
        min: usize,
    },
    /// A blob longer than the format allows.
    #[error("sealed secret is {len} bytes, at most {max} allowed")]
    BlobTooLong {
        /// Its length.
        len: usize,
        /// The greatest valid length.
        max: usize,
    },
    /// A blob whose format byte this build does not know.
    #[error("unsupported sealed-secret format {found} (this build reads {supported})")]
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
        /// The format this build reads.
        supported: u8,
    },
    /// A decrypted secret that is not UTF-8, asked for as a [`Secret`] string.
    #[error("the secret is not UTF-8 text")]
    NotUtf8,
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Random,
    /// The store has no master key: set `CREDSTORE_MASTER_KEY` (a development store keeps
    /// one in `master.key`).
    #[error("no master key: set CREDSTORE_MASTER_KEY (64 hex characters, or VERSION:HEX,...)")]
    NoMasterKey,
}

impl VaultError {
    /// True when the caller's input was at fault (nothing to retry with the same input).
    pub fn is_caller_error(&self) -> bool {
        matches!(self, VaultError::Input(_))
    }
}

/// A 32-byte master key and its version, zeroized on drop, redacted in `Debug`.
///
/// The raw key is never used directly: a key-encryption key is derived from it with
/// BLAKE3 (`derive_key`, context `"credstore 2025-06 vault key-encryption key v1"`), and a
/// public check value with another context (see [`MasterKey::check_value`]).
#[derive(Clone)]
pub struct MasterKey {
    version: u32,
    material: Box<KeyMaterial>,
}

impl MasterKey {
    /// A master key from raw bytes.
    ///
    /// # Errors
    /// [`InputError::InvalidMasterKeyVersion`] for version 0.
    pub fn from_bytes(version: u32, mut bytes: [u8; KEY_LEN]) -> Result<Self, InputError> {
        let key = MasterKey::from_array(version, &bytes);
        bytes.zeroize();
        key
    }

    /// Parses 64 hex characters (the `CREDSTORE_MASTER_KEY` format; surrounding whitespace
    /// allowed).
    ///
    /// # Errors
    /// [`InputError::InvalidMasterKey`] when the text is not exactly 32 bytes of hex,
    /// [`InputError::InvalidMasterKeyVersion`] for version 0.
    pub fn from_hex(version: u32, text: &str) -> Result<Self, InputError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim(), &mut *bytes).map_err(|_| InputError::InvalidMasterKey)?;
        MasterKey::from_array(version, &bytes)
    }

    /// A fresh random master key from the OS CSPRNG.
    ///
    /// # Errors
    /// [`VaultError::Random`] if the OS generator fails; [`InputError::InvalidMasterKeyVersion`]
    /// for version 0.
    pub fn random(version: u32) -> Result<Self, VaultError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut *bytes)?;
        Ok(MasterKey::from_array(version, &bytes)?)
    }

    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key as 64 lowercase hex characters, zeroized on drop. Only for a development
    /// store that keeps its master key beside the data.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.material.raw))
    }

    /// A public value that identifies this key without revealing it: BLAKE3 `derive_key`
    /// with its own context. Store it beside the data so that opening with a wrong master
    /// key is a clear error up front, not a failure on the first read.
    pub fn check_value(&self) -> [u8; 32] {
        blake3::derive_key(CHECK_CONTEXT, &self.material.raw)
    }

    /// Copies the key straight into its zeroizing heap box.
    fn from_array(version: u32, bytes: &[u8; KEY_LEN]) -> Result<Self, InputError> {
        if version == 0 {
            return Err(InputError::InvalidMasterKeyVersion);
        }
        let mut material = Box::new(KeyMaterial {
            raw: [0; KEY_LEN],
            kek: [0; KEY_LEN],
        });
        material.raw.copy_from_slice(bytes);
        let mut kek = blake3::derive_key(KEK_CONTEXT, bytes);
        material.kek.copy_from_slice(&kek);
        kek.zeroize();
        Ok(MasterKey { version, material })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.material.kek))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The master keys a store holds: the current (highest) version wraps new data keys; older
/// versions at or above the minimum decryption version still unwrap; versions below it are
/// retired and refuse to open anything.
#[derive(Debug, Clone)]
pub struct MasterKeyring {
    current: MasterKey,
    older: BTreeMap<u32, MasterKey>,
    min_decrypt_version: u32,
}

impl MasterKeyring {
    /// A keyring holding one key, which is current. Nothing is retired.
    pub fn new(key: MasterKey) -> Self {
        MasterKeyring {
            current: key,
            older: BTreeMap::new(),
            min_decrypt_version: 1,
        }
    }

    /// Adds a key. A key with a higher version than the current one becomes current.
    ///
    /// # Errors
    /// [`VaultError::DuplicateMasterKey`] when a key with this version is already held.
    pub fn insert(&mut self, key: MasterKey) -> Result<(), VaultError> {
        if key.version == self.current.version || self.older.contains_key(&key.version) {
            return Err(VaultError::DuplicateMasterKey(key.version));
        }
        if key.version > self.current.version {
            let previous = std::mem::replace(&mut self.current, key);
            self.older.insert(previous.version, previous);
        } else {
            self.older.insert(key.version, key);
        }
        Ok(())
    }

    /// The current master key: the highest version, used to wrap every new data key.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The version after the current one, for a new master key.
    ///
    /// # Errors
    /// [`VaultError::VersionsExhausted`] at `u32::MAX`.
    pub fn next_version(&self) -> Result<u32, VaultError> {
        self.current
            .version
            .checked_add(1)
            .ok_or(VaultError::VersionsExhausted(self.current.version))
    }

    /// The key that unwraps blobs of this master version.
    ///
    /// # Errors
    /// [`VaultError::RetiredMasterKey`] below the minimum decryption version (even if the
    /// key is still held), [`VaultError::UnknownMasterKey`] when no key has this version.
    pub fn get(&self, version: u32) -> Result<&MasterKey, VaultError> {
        if version < self.min_decrypt_version {
            return Err(VaultError::RetiredMasterKey {
                version,
                min: self.min_decrypt_version,
            });
        }
        if version == self.current.version {
            return Ok(&self.current);
        }
        self.older.get(&version).ok_or(VaultError::UnknownMasterKey { version })
    }

    /// The versions held, lowest first (retired ones included).
    pub fn versions(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = self.older.keys().copied().collect();
        versions.push(self.current.version);
        versions
    }

    /// The minimum decryption version: blobs wrapped under a lower version do not open.
    pub fn min_decrypt_version(&self) -> u32 {
        self.min_decrypt_version
    }

    /// Retires every master key below `min`: blobs still wrapped under one of them no
    /// longer open (rewrap them first). Lowering it again un-retires keys still held.
    ///
    /// # Errors
    /// [`VaultError::WouldRetireCurrent`] when `min` is above the current version.
    pub fn set_min_decrypt_version(&mut self, min: u32) -> Result<(), VaultError> {
        if min > self.current.version {
            return Err(VaultError::WouldRetireCurrent {
                min,
                current: self.current.version,
            });
        }
        self.min_decrypt_version = min;
        Ok(())
    }

    /// True when the blob is not wrapped under the current master key, so a master-key
    /// rotation should [`rewrap`] it.
    pub fn needs_rewrap(&self, sealed: &SealedSecret) -> bool {
        sealed.master_version != self.current.version
    }
}

/// A sealed (encrypted) secret, as stored: see `docs/SECURITY.md` for the byte layout.
///
/// Holds no secret in clear. Serialises (serde) as its bytes ([`SealedSecret::to_bytes`]);
/// deserialising runs [`SealedSecret::from_bytes`], so a damaged blob is an error, never a
/// panic.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    master_version: u32,
    wrap: WrappedDek,
    data_nonce: [u8; NONCE_LEN],
    /// The secret's ciphertext followed by its tag.
    data: Vec<u8>,
}

impl SealedSecret {
    /// The blob's bytes: format byte, master version (u32 big-endian), wrap nonce (24),
    /// wrapped data key (32) and its tag (16), data nonce (24), ciphertext and its tag (16).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.master_version.to_be_bytes());
        out.extend_from_slice(&self.wrap.nonce);
        out.extend_from_slice(&self.wrap.key);
        out.extend_from_slice(&self.wrap.tag);
        out.extend_from_slice(&self.data_nonce);
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses a blob. Checks only the layout (the cryptography is checked by [`open`]), and
    /// never panics, whatever the bytes.
    ///
    /// # Errors
    /// [`VaultError::BlobTooShort`], [`VaultError::BlobTooLong`],
    /// [`VaultError::UnsupportedFormat`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let too_short = VaultError::BlobTooShort {
            len: bytes.len(),
            min: MIN_BLOB_LEN,
        };
        let Some((&format, rest)) = bytes.split_first() else {
            return Err(too_short);
        };
        if format != FORMAT_V1 {
            return Err(VaultError::UnsupportedFormat {
                found: format,
                supported: FORMAT_V1,
            });
        }
        if bytes.len() < MIN_BLOB_LEN {
            return Err(too_short);
        }
        if bytes.len() > MAX_BLOB_LEN {
            return Err(VaultError::BlobTooLong {
                len: bytes.len(),
                max: MAX_BLOB_LEN,
            });
        }
        let (master_version, rest) = take::<4>(rest).ok_or_else(|| too_short.clone())?;
        let (nonce, rest) = take::<NONCE_LEN>(rest).ok_or_else(|| too_short.clone())?;
        let (key, rest) = take::<KEY_LEN>(rest).ok_or_else(|| too_short.clone())?;
        let (tag, rest) = take::<TAG_LEN>(rest).ok_or_else(|| too_short.clone())?;
        let (data_nonce, data) = take::<NONCE_LEN>(rest).ok_or_else(|| too_short.clone())?;
        if data.len() <= TAG_LEN {
            return Err(too_short);
        }
        Ok(SealedSecret {
            master_version: u32::from_be_bytes(master_version),
            wrap: WrappedDek { nonce, key, tag },
            data_nonce,
            data: data.to_vec(),
        })
    }

    /// The version of the master key that wraps this blob's data key.
    pub fn master_version(&self) -> u32 {
        self.master_version
    }

    /// The nonce of the data-key wrap.
    pub fn wrap_nonce(&self) -> &[u8; NONCE_LEN] {
        &self.wrap.nonce
    }

    /// The nonce of the secret's encryption.
    pub fn data_nonce(&self) -> &[u8; NONCE_LEN] {
        &self.data_nonce
    }

    /// The secret's ciphertext followed by its tag. [`rewrap`] leaves it unchanged.
    pub fn data_ciphertext(&self) -> &[u8] {
        &self.data
    }

    /// The blob's length in bytes ([`SealedSecret::to_bytes`]).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("format", &FORMAT_V1)
            .field("master_version", &self.master_version)
            .field("len", &self.encoded_len())
            .finish_non_exhaustive()
    }
}

impl serde::Serialize for SealedSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for SealedSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SealedVisitor)
    }
}

/// A decrypted secret as bytes, zeroized on drop, redacted in `Debug`; not `Clone`, not
/// `Serialize`, not `Display`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// The secret itself. Call this only where the secret must leave the process (handed to
    /// the provider's client).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as a [`Secret`] string, without copying it.
    ///
    /// # Errors
    /// [`VaultError::NotUtf8`] when the bytes are not UTF-8 (they are zeroized).
    pub fn into_secret(self) -> Result<Secret, VaultError> {
        let SecretBytes(mut inner) = self;
        let bytes = std::mem::take(&mut *inner);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Secret::new(text)),
            Err(e) => {
                let mut bytes = e.into_bytes();
                bytes.zeroize();
                Err(VaultError::NotUtf8)
            }
        }
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// Encrypts a secret for the record (`project`, `name`, `version`) under a fresh data key,
/// wrapped under the keyring's current master key.
///
/// # Errors
/// [`VaultError::Input`] for a bad project ([`InputError::InvalidProject`]), name
/// ([`InputError::InvalidSecretName`]) or size ([`InputError::EmptySecret`],
/// [`InputError::SecretTooLarge`]); [`VaultError::Random`] if the OS generator fails.
pub fn seal(
    ring: &MasterKeyring,
    project: &str,
    name: &str,
    version: u32,
    plaintext: &[u8],
) -> Result<SealedSecret, VaultError> {
    validate_record(project, name)?;
    validate_secret_len(plaintext.len())?;
    let dek = DataKey::random()?;
    let data_nonce = random_nonce()?;
    let ad = data_ad(project, name, version);

    // The buffer holds the plaintext only until it is encrypted in place; it has room for
    // the tag, so it never reallocates while it holds the plaintext.
    let mut data = Vec::with_capacity(plaintext.len() + TAG_LEN);
    data.extend_from_slice(plaintext);
    let tag = match dek
        .cipher()
        .encrypt_in_place_detached(&XNonce::from(data_nonce), &ad, &mut data)
    {
        Ok(tag) => tag,
        Err(_) => {
            data.zeroize();
            return Err(VaultError::EncryptFailed);
        }
    };
    data.extend_from_slice(&tag);

    let master = ring.current();
    let wrap = wrap_dek(master, &dek, project, name, version)?;
    Ok(SealedSecret {
        master_version: master.version,
        wrap,
        data_nonce,
        data,
    })
}

/// Decrypts a secret stored for the record (`project`, `name`, `version`).
///
/// # Errors
/// [`VaultError::Input`] for a bad project or name; [`VaultError::RetiredMasterKey`] or
/// [`VaultError::UnknownMasterKey`] when the blob's master key is retired or not loaded;
/// [`VaultError::UnwrapFailed`] for a wrong master key or a blob altered or moved from
/// another record; [`VaultError::DecryptFailed`] when the data part was altered.
pub fn open(
    ring: &MasterKeyring,
    sealed: &SealedSecret,
    project: &str,
    name: &str,
    version: u32,
) -> Result<SecretBytes, VaultError> {
    validate_record(project, name)?;
    let master = ring.get(sealed.master_version)?;
    let dek = unwrap_dek(master, sealed, project, name, version)?;
    decrypt_data(&dek, sealed, project, name, version)
}

/// Rewraps a secret's data key under the keyring's current master key, without decrypting
/// the secret: only the data key is unwrapped (with the blob's own master key) and wrapped
/// again under a fresh nonce. The data nonce and ciphertext are copied unchanged.
///
/// Rotation: insert the new master key, rewrap every blob ([`MasterKeyring::needs_rewrap`]
/// tells which), persist them, then raise the minimum decryption version.
///
/// # Errors
/// As [`open`], except [`VaultError::DecryptFailed`], which cannot occur: the data part is
/// not checked here (it is by the next [`open`]).
pub fn rewrap(
    ring: &MasterKeyring,
    sealed: &SealedSecret,
    project: &str,
    name: &str,
    version: u32,
) -> Result<SealedSecret, VaultError> {
    validate_record(project, name)?;
    let old = ring.get(sealed.master_version)?;
    let dek = unwrap_dek(old, sealed, project, name, version)?;
    let master = ring.current();
    let wrap = wrap_dek(master, &dek, project, name, version)?;
    Ok(SealedSecret {
        master_version: master.version,
        wrap,
        data_nonce: sealed.data_nonce,
        data: sealed.data.clone(),
    })
}

/// How many secrets this thread has decrypted (data ciphertexts opened, successfully or
/// not) since it started. [`open`] adds one; [`rewrap`] and [`seal`] never do. Tests use it
/// to prove that a master-key rotation decrypts nothing.
pub fn data_decryptions_on_this_thread() -> u64 {
    DATA_DECRYPTIONS.with(Cell::get)
}

/// Checks a secret's size: 1 to [`MAX_SECRET_LEN`] bytes.
///
/// # Errors
/// [`InputError::EmptySecret`], [`InputError::SecretTooLarge`].
pub fn validate_secret_len(len: usize) -> Result<(), InputError> {
    if len == 0 {
        return Err(InputError::EmptySecret);
    }
    if len > MAX_SECRET_LEN {
        return Err(InputError::SecretTooLarge {
            len,
            max: MAX_SECRET_LEN,
        });
    }
    Ok(())
}

/// Checks a secret name: 1 to [`MAX_SECRET_NAME_LEN`] characters of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`InputError::InvalidSecretName`] (which does not repeat the name).
pub fn validate_secret_name(name: &str) -> Result<(), InputError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidSecretName { len: name.len() })
    }
}

/// Raw master key bytes and the key-encryption key derived from them, on the heap so that
/// moving a [`MasterKey`] leaves no copy behind.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct KeyMaterial {
    raw: [u8; KEY_LEN],
    kek: [u8; KEY_LEN],
}

/// A data key wrapped under a master key: the nonce, the encrypted key and its tag.
#[derive(Clone, PartialEq, Eq)]
struct WrappedDek {
    nonce: [u8; NONCE_LEN],
    key: [u8; KEY_LEN],
    tag: [u8; TAG_LEN],
}

/// A secret's data key, zeroized on drop.
struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    fn random() -> Result<Self, VaultError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut *key)?;
        Ok(DataKey(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&*self.0))
    }
}

thread_local! {
    static DATA_DECRYPTIONS: Cell<u64> = const { Cell::new(0) };
}

/// Wraps a data key under a master key with a fresh nonce.
fn wrap_dek(
    master: &MasterKey,
    dek: &DataKey,
    project: &str,
    name: &str,
    version: u32,
) -> Result<WrappedDek, VaultError> {
    let nonce = random_nonce()?;
    let ad = wrap_ad(master.version, project, name, version);
    // Encrypted in place: the buffer holds the data key until the call returns, and is
    // zeroized if encryption fails.
    let mut buf = Zeroizing::new([0u8; KEY_LEN]);
    buf.copy_from_slice(&*dek.0);
    let tag = master
        .cipher()
        .encrypt_in_place_detached(&XNonce::from(nonce), &ad, &mut *buf)
        .map_err(|_| VaultError::EncryptFailed)?;
    Ok(WrappedDek {
        nonce,
        key: *buf,
        tag: tag.into(),
    })
}

/// Unwraps a blob's data key; the master key must be the one its header names.
fn unwrap_dek(
    master: &MasterKey,
    sealed: &SealedSecret,
    project: &str,
    name: &str,
    version: u32,
) -> Result<DataKey, VaultError> {
    let ad = wrap_ad(sealed.master_version, project, name, version);
    let mut key = Zeroizing::new(sealed.wrap.key);
    master
        .cipher()
        .decrypt_in_place_detached(
            &XNonce::from(sealed.wrap.nonce),
            &ad,
            &mut *key,
            &Tag::from(sealed.wrap.tag),
        )
        .map_err(|_| VaultError::UnwrapFailed {
            version: sealed.master_version,
        })?;
    Ok(DataKey(key))
}

/// Decrypts the data part: the only place a secret's ciphertext is decrypted.
fn decrypt_data(
    dek: &DataKey,
    sealed: &SealedSecret,
    project: &str,
    name: &str,
    version: u32,
) -> Result<SecretBytes, VaultError> {
    DATA_DECRYPTIONS.with(|count| count.set(count.get().saturating_add(1)));
    let (ciphertext, tag) = sealed
        .data
        .split_last_chunk::<TAG_LEN>()
        .ok_or(VaultError::DecryptFailed)?;
    let ad = data_ad(project, name, version);
    // The tag is checked before anything is decrypted, so on failure the buffer still
    // holds ciphertext; it is zeroizing either way.
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    dek.cipher()
        .decrypt_in_place_detached(&XNonce::from(sealed.data_nonce), &ad, &mut buf, &Tag::from(*tag))
        .map_err(|_| VaultError::DecryptFailed)?;
    Ok(SecretBytes(buf))
}

/// Associated data of the data-key wrap: binds the record, the format and the master
/// version.
fn wrap_ad(master_version: u32, project: &str, name: &str, version: u32) -> Vec<u8> {
    associated_data(PURPOSE_WRAP, Some(master_version), project, name, version)
}

/// Associated data of the secret's encryption: binds the record and the format. Not the
/// master version, so that a rewrap leaves the ciphertext unchanged; the data key it needs
/// is bound to the master version by the wrap.
fn data_ad(project: &str, name: &str, version: u32) -> Vec<u8> {
    associated_data(PURPOSE_DATA, None, project, name, version)
}

/// `domain || purpose || format || [master version u32 BE] || secret version u32 BE ||
/// project length u16 BE || project || name length u16 BE || name`.
fn associated_data(purpose: u8, master_version: Option<u32>, project: &str, name: &str, version: u32) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 14 + project.len() + name.len());
    ad.extend_from_slice(AD_DOMAIN);
    ad.push(purpose);
    ad.push(FORMAT_V1);
    if let Some(master_version) = master_version {
        ad.extend_from_slice(&master_version.to_be_bytes());
    }
    ad.extend_from_slice(&version.to_be_bytes());
    push_field(&mut ad, project.as_bytes());
    push_field(&mut ad, name.as_bytes());
    ad
}

/// Appends a u16 big-endian length and the bytes. Fields are validated to at most 128
/// bytes before they get here; a longer one is clamped, which can only make it not open.
fn push_field(ad: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    ad.extend_from_slice(&len.to_be_bytes());
    ad.extend_from_slice(field);
}

fn validate_record(project: &str, name: &str) -> Result<(), InputError> {
    validate_project(project)?;
    validate_secret_name(name)
}

fn random_nonce() -> Result<[u8; NONCE_LEN], VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|_| VaultError::Random)
}

/// Splits `N` bytes off the front.
fn take<const N: usize>(input: &[u8]) -> Option<([u8; N], &[u8])> {
    input.split_first_chunk::<N>().map(|(head, rest)| (*head, rest))
}

struct SealedVisitor;

impl<'de> serde::de::Visitor<'de> for SealedVisitor {
    type Value = SealedSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the bytes of a sealed secret")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<SealedSecret, E> {
        SealedSecret::from_bytes(bytes).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SealedSecret, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BLOB_LEN));
        while let Some(byte) = seq.next_element::<u8>()? {
            if bytes.len() == MAX_BLOB_LEN {
                return Err(serde::de::Error::custom(VaultError::BlobTooLong {
                    len: MAX_BLOB_LEN + 1,
                    max: MAX_BLOB_LEN,
                }));
            }
            bytes.push(byte);
        }
        SealedSecret::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> MasterKeyring {
        MasterKeyring::new(MasterKey::from_bytes(1, [1; 32]).unwrap())
    }

    #[test]
    fn round_trip_through_bytes() {
        let ring = ring();
        let sealed = seal(&ring, "acme", "openai", 3, b"sk-abc").unwrap();
        let bytes = sealed.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 6 + TAG_LEN);
        assert_eq!(bytes.len(), sealed.encoded_len());
        assert_eq!(bytes.first(), Some(&FORMAT_V1));
        let parsed = SealedSecret::from_bytes(&bytes).unwrap();
        assert_eq!(parsed, sealed);
        assert_eq!(open(&ring, &parsed, "acme", "openai", 3).unwrap().expose(), b"sk-abc");
    }

    #[test]
    fn every_single_byte_change_fails() {
        let ring = ring();
        let bytes = seal(&ring, "acme", "openai", 1, b"secret value").unwrap().to_bytes();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let opened = SealedSecret::from_bytes(&bad).and_then(|s| open(&ring, &s, "acme", "openai", 1));
                assert!(opened.is_err(), "byte {i} flipped with {flip:#x} still opened");
            }
        }
    }

    #[test]
    fn associated_data_is_unambiguous() {
        // Moving a byte between project and name must change the associated data.
        assert_ne!(data_ad("ab", "c", 1), data_ad("a", "bc", 1));
        assert_ne!(wrap_ad(1, "a", "b", 2), wrap_ad(2, "a", "b", 1));
        assert_ne!(
            associated_data(PURPOSE_WRAP, None, "a", "b", 1),
            associated_data(PURPOSE_DATA, None, "a", "b", 1)
        );
    }

    #[test]
    fn header_master_version_edit_is_caught_by_the_wrap() {
        let mut ring = ring();
        ring.insert(MasterKey::from_bytes(2, [1; 32]).unwrap()).unwrap();
        // Same key bytes under two versions: only the associated data tells them apart.
        let sealed = seal(&ring, "acme", "n", 1, b"x").unwrap();
        let mut bytes = sealed.to_bytes();
        bytes[1..5].copy_from_slice(&1u32.to_be_bytes());
        let moved = SealedSecret::from_bytes(&bytes).unwrap();
        assert_eq!(
            open(&ring, &moved, "acme", "n", 1).unwrap_err(),
            VaultError::UnwrapFailed { version: 1 }
        );
    }

    #[test]
    fn not_utf8_secret_is_refused_as_a_string() {
        let ring = ring();
        let sealed = seal(&ring, "p", "n", 1, &[0xff, 0xfe]).unwrap();
        let opened = open(&ring, &sealed, "p", "n", 1).unwrap();
        assert_eq!(opened.into_secret().unwrap_err(), VaultError::NotUtf8);
        let sealed = seal(&ring, "p", "n", 1, "clé".as_bytes()).unwrap();
        let secret = open(&ring, &sealed, "p", "n", 1).unwrap().into_secret().unwrap();
        assert_eq!(secret.expose(), "clé");
    }

    #[test]
    fn keyring_versions_and_retirement() {
        let mut ring = ring();
        assert_eq!(ring.next_version().unwrap(), 2);
        ring.insert(MasterKey::from_bytes(3, [3; 32]).unwrap()).unwrap();
        ring.insert(MasterKey::from_bytes(2, [2; 32]).unwrap()).unwrap();
        assert_eq!(ring.current().version(), 3);
        assert_eq!(ring.versions(), [1, 2, 3]);
        assert_eq!(
            ring.insert(MasterKey::from_bytes(2, [9; 32]).unwrap()).unwrap_err(),
            VaultError::DuplicateMasterKey(2)
        );
        assert_eq!(
            ring.set_min_decrypt_version(4).unwrap_err(),
            VaultError::WouldRetireCurrent { min: 4, current: 3 }
        );
        ring.set_min_decrypt_version(2).unwrap();
        assert_eq!(
            ring.get(1).unwrap_err(),
            VaultError::RetiredMasterKey { version: 1, min: 2 }
        );
        assert_eq!(ring.get(7).unwrap_err(), VaultError::UnknownMasterKey { version: 7 });
        assert_eq!(ring.get(2).unwrap().version(), 2);
        let max = MasterKeyring::new(MasterKey::from_bytes(u32::MAX, [0; 32]).unwrap());
        assert_eq!(max.next_version().unwrap_err(), VaultError::VersionsExhausted(u32::MAX));
    }

    #[test]
    fn master_key_parsing() {
        let key = MasterKey::random(5).unwrap();
        let again = MasterKey::from_hex(5, &format!("  {}\n", key.to_hex().as_str())).unwrap();
        assert_eq!(key.check_value(), again.check_value());
        assert_ne!(key.check_value(), MasterKey::random(5).unwrap().check_value());
        assert_eq!(
            MasterKey::from_hex(1, "abcd").unwrap_err(),
            InputError::InvalidMasterKey
        );
        assert_eq!(
            MasterKey::from_hex(1, &"g".repeat(64)).unwrap_err(),
            InputError::InvalidMasterKey
        );
        assert_eq!(
            MasterKey::from_bytes(0, [0; 32]).unwrap_err(),
            InputError::InvalidMasterKeyVersion
        );
        // The check value is neither the raw key nor the key-encryption key.
        assert_ne!(key.check_value(), key.material.raw);
        assert_ne!(key.check_value(), key.material.kek);
        assert_ne!(key.material.raw, key.material.kek);
    }

    #[test]
    fn serde_as_bytes_in_bincode_and_json() {
        let ring = ring();
        let sealed = seal(&ring, "acme", "n", 1, b"v").unwrap();
        let config = bincode::config::standard();
        let encoded = bincode::serde::encode_to_vec(&sealed, config).unwrap();
        let (decoded, _): (SealedSecret, usize) = bincode::serde::decode_from_slice(&encoded, config).unwrap();
        assert_eq!(decoded, sealed);
        let json = serde_json::to_string(&sealed).unwrap();
        assert_eq!(serde_json::from_str::<SealedSecret>(&json).unwrap(), sealed);
        assert!(serde_json::from_str::<SealedSecret>("[1,2,3]").is_err());
    }
}
