//! The files of a data directory besides the log and the index: the `STORE` marker, the
//! `LOCK` file and, for development stores only, `pepper.key`.
//!
//! `STORE` is three lines of text, written last by `init` (so a directory without it is
//! not a store):
//!
//! ```text
//! credstore-store 1
//! store_id <32 hex>
//! pepper_check <64 hex: blake3::keyed_hash(pepper, "credstore pepper check v1" || store_id)>
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, OpenError, Result};
use crate::secret::Pepper;

/// The store format version this build reads and writes.
pub(crate) const STORE_VERSION: u32 = 1;
const MARKER: &str = "STORE";
const LOCK: &str = "LOCK";
/// How often a held lock is tried again while waiting for it.
const LOCK_POLL: Duration = Duration::from_millis(5);
/// The development store's pepper file.
pub(crate) const PEPPER_FILE: &str = "pepper.key";

/// What the marker holds.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub store_id: [u8; 16],
    pub pepper_check: [u8; 32],
}

impl Marker {
    pub fn new(store_id: [u8; 16], pepper: &Pepper) -> Self {
        Marker {
            store_id,
            pepper_check: pepper_check(pepper, &store_id),
        }
    }

    /// Reads `DATA/STORE`.
    pub fn read(data: &Path) -> Result<Self> {
        let path = data.join(MARKER);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenError::NotAStore(data.to_path_buf()).into());
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let damaged = || Error::from(OpenError::Damaged(path.clone()));
        let mut lines = text.lines();
        let version: u32 = lines
            .next()
            .and_then(|l| l.strip_prefix("credstore-store "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(damaged)?;
        if version != STORE_VERSION {
            return Err(OpenError::UnsupportedVersion {
                found: version,
                supported: STORE_VERSION,
            }
            .into());
        }
        let mut field = |name: &str, out: &mut [u8]| -> Result<()> {
            let line = lines.next().ok_or_else(damaged)?;
            let value = line.strip_prefix(name).ok_or_else(damaged)?.trim();
            hex::decode_to_slice(value, out).map_err(|_| damaged())
        };
        let mut store_id = [0u8; 16];
        let mut pepper_check = [0u8; 32];
        field("store_id ", &mut store_id)?;
        field("pepper_check ", &mut pepper_check)?;
        Ok(Marker { store_id, pepper_check })
    }

    /// Writes `DATA/STORE` durably (temporary file, fsync, rename, fsync directory).
    pub fn write(&self, data: &Path) -> Result<()> {
        let text = format!(
            "credstore-store {STORE_VERSION}\nstore_id {}\npepper_check {}\n",
            hex::encode(self.store_id),
            hex::encode(self.pepper_check)
        );
        write_durably(&data.join(MARKER), text.as_bytes())
    }

    /// Checks that `pepper` is the store's.
    pub fn check_pepper(&self, pepper: &Pepper) -> Result<()> {
        let expected = blake3::Hash::from_bytes(self.pepper_check);
        if blake3::Hash::from_bytes(pepper_check(pepper, &self.store_id)) == expected {
            Ok(())
        } else {
            Err(OpenError::WrongPepper.into())
        }
    }
}

fn pepper_check(pepper: &Pepper, store_id: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(pepper.bytes());
    h.update(b"credstore pepper check v1");
    h.update(store_id);
    *h.finalize().as_bytes()
}

/// Takes the store's exclusive lock, waiting up to `wait` while another holds it; held as
/// long as the returned file is open.
pub(crate) fn lock(data: &Path, wait: Duration) -> Result<File> {
    let path = data.join(LOCK);
    let file = create_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // Polled, not a blocking `lock()`: std has no timed lock. Another CLI command holds
    // the lock for the tens of milliseconds it runs; a process that forks (to run a
    // command) while another thread of it holds the lock keeps the lock's file
    // description open until the child's exec closes it, so a lock just released can
    // read as held for a moment.
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(data.to_path_buf()).into()),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
}

/// Reads a development store's pepper file, if there is one.
pub(crate) fn read_pepper_file(data: &Path) -> Result<Option<Pepper>> {
    let path = data.join(PEPPER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Pepper::from_hex(&text)
            .map(Some)
            .map_err(|_| OpenError::Damaged(path).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes a development store's pepper file, 0600.
pub(crate) fn write_pepper_file(data: &Path, pepper: &Pepper) -> Result<()> {
    write_durably(&data.join(PEPPER_FILE), pepper.to_hex().as_bytes())
}

/// The development store's master key file.
pub(crate) const MASTER_FILE: &str = "master.key";

/// Reads a development store's master key file (`VERSION:HEX` lines), if there is one.
pub(crate) fn read_master_file(data: &Path) -> Result<Option<crate::vault::MasterKeyring>> {
    let path = data.join(MASTER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            super::vault_ops::parse_master_keys(&text.replace('\n', ","))
                .map(Some)
                .map_err(|_| OpenError::Damaged(path).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Writes a development store's master key file, 0600: one `VERSION:HEX` line per key.
pub(crate) fn write_master_file(data: &Path, ring: &crate::vault::MasterKeyring) -> Result<()> {
    let mut text = zeroize::Zeroizing::new(String::new());
    for version in ring.versions() {
        let key = ring.get(version)?;
        text.push_str(&format!("{}:{}\n", key.version(), key.to_hex().as_str()));
    }
    write_durably(&data.join(MASTER_FILE), text.as_bytes())
}

/// Creates a directory (and parents) with mode 0700.
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path).map_err(|e| Error::io(path, e))
}

/// Removes the directory `path` and everything in it, if it exists.
pub(crate) fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Whether `path` is missing or an empty directory.
pub(crate) fn is_missing_or_empty(path: &Path) -> Result<bool> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn create_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = create_options()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::log::sync_dir(dir).map_err(|e| Error::io(dir, e))
}
