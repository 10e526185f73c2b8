//! The digest signing key: an Ed25519 key kept in `DATA_DIR/audit/signing.key` (mode
//! 0600), wrapped by the root key (AES-256-GCM, label `kura audit signing key v1`).
//!
//! The key never appears in, and cannot be derived from, the records or the digests.
//! Without the root key nobody can sign a digest that verifies, and nobody can swap in a
//! key of their own: verification takes the public key from this file *after* unwrapping
//! it with the root key (or from `--public-key`, pinned by the operator).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kura_crypto::{RootKey, SecretBytes, SigningKey};

use crate::segment::sync_dir;

pub const KEY_FILE: &str = "signing.key";
const MAGIC: &[u8] = b"KURAAUDITKEY1\n";
const LABEL: &[u8] = b"kura audit signing key v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write the audit signing key {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the audit signing key {0} is not a kura key file, or the root key cannot unwrap it (was the data directory started with another root key?)"
    )]
    Unwrap(PathBuf),
    #[error(
        "the audit signing key {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot generate or wrap the audit signing key: {0}")]
    Crypto(#[from] kura_crypto::CryptoError),
}

/// Loads the signing key of the trail in `dir`, creating one on first use.
pub fn load_or_create(dir: &Path, root_key: &RootKey) -> Result<SigningKey, KeyFileError> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return load(dir, root_key);
    }
    let (key, pkcs8) = SigningKey::generate()?;
    let wrapped = root_key.wrap(LABEL, pkcs8.expose())?;
    write_new(&path, &wrapped).map_err(|source| KeyFileError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(key)
}

/// Loads the signing key of the trail in `dir`.
pub fn load(dir: &Path, root_key: &RootKey) -> Result<SigningKey, KeyFileError> {
    let path = dir.join(KEY_FILE);
    let io_error = |source| KeyFileError::Io {
        path: path.clone(),
        source,
    };
    let bytes = fs::read(&path).map_err(io_error)?;
    let mode = fs::metadata(&path).map_err(io_error)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path,
            mode: mode & 0o777,
        });
    }
    let wrapped = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| KeyFileError::Unwrap(path.clone()))?;
    let pkcs8: SecretBytes = root_key
        .unwrap(LABEL, wrapped)
        .map_err(|_| KeyFileError::Unwrap(path.clone()))?;
    SigningKey::from_pkcs8(&pkcs8).map_err(|_| KeyFileError::Unwrap(path))
}

fn write_new(path: &Path, wrapped: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(wrapped)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_key_is_wrapped_and_bound_to_the_root_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap();
        let first = load_or_create(dir.path(), &root).unwrap();
        let again = load_or_create(dir.path(), &root).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        let path = dir.path().join(KEY_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let other_root = RootKey::from_secret(&SecretBytes::copy_from(&[7u8; 32])).unwrap();
        assert!(matches!(
            load(dir.path(), &other_root),
            Err(KeyFileError::Unwrap(_))
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(dir.path(), &root),
            Err(KeyFileError::Permissions { .. })
        ));
    }
}
