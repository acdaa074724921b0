//! File modes: everything in a data directory is 0600 (files) or 0700 (directories).
//!
//! credstore's own files are created with these modes (`store::files`, `log`). sled is not
//! told any: it creates its directories 0777 and its files 0666 less the umask (0755 and
//! 0644 under the usual 022). So the index directory is brought to the modes above
//! before sled opens it ([`private_dir`]: sled's files then lie in a directory no one
//! else can enter), again after (sled's `conf`, `db`, `blobs/` and `snap.*` files), and
//! when the index is dropped (a blob sled wrote for a large page while the store was
//! open; after a crash, the next open fixes it).

use std::path::Path;

use crate::error::{Error, Result};

/// The mode of every file in a data directory.
#[cfg(unix)]
pub(crate) const FILE_MODE: u32 = 0o600;
/// The mode of every directory in a data directory.
#[cfg(unix)]
pub(crate) const DIR_MODE: u32 = 0o700;

/// Creates `root` (and missing parents) with mode 0700 if it is missing, then
/// [`restrict_tree`]s it.
///
/// # Errors
/// The first I/O error, with the path it happened on.
pub(crate) fn private_dir(root: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(root).map_err(|e| Error::io(root, e))?;
    restrict_tree(root)
}

/// Sets every directory under `root`, itself included, to 0700 and every file to 0600.
/// Symbolic links are left alone, and not followed. Outside Unix it does nothing.
///
/// # Errors
/// The first I/O error, with the path it happened on (`root` missing, say).
pub(crate) fn restrict_tree(root: &Path) -> Result<()> {
    #[cfg(unix)]
    restrict(root, true)?;
    #[cfg(not(unix))]
    let _ = root;
    Ok(())
}

/// Sets `path`'s mode, then, for a directory, its entries' modes.
#[cfg(unix)]
fn restrict(path: &Path, is_dir: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mode = if is_dir { DIR_MODE } else { FILE_MODE };
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))?;
    }
    if !is_dir {
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if kind.is_dir() || kind.is_file() {
            restrict(&entry.path(), kind.is_dir())?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_tree_is_brought_to_0700_and_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("index");
        private_dir(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        let sub = root.join("blobs");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in [root.join("db"), sub.join("1")] {
            std::fs::write(&file, b"x").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&root).unwrap();
        assert_eq!(
            [mode(&root), mode(&sub), mode(&root.join("db")), mode(&sub.join("1"))],
            [0o700, 0o700, 0o600, 0o600]
        );
        // A missing tree is an error, not created.
        assert!(restrict_tree(&tmp.path().join("gone")).is_err());
        assert!(!tmp.path().join("gone").exists());
    }
}
