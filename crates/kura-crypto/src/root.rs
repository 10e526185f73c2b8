//! The root key: the one secret that protects every other secret kura keeps at rest.
//!
//! Backing keys, IAM secret access keys and (later) volume keys are stored only in
//! wrapped form: AES-256-GCM under the root key, with a caller-chosen label as additional
//! authenticated data so a wrapped value cannot be moved to another record.
//!
//! Wrapped value layout: `0x01 | nonce (12) | ciphertext | tag (16)`.
//!
//! The root key lives in a file (mode 0600) that may sit outside the data directory, so the
//! metadata database alone — a backup, a copied disk image — reveals no key material.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead;

use crate::{CryptoError, SecretBytes, fill_random, hmac_sha256};

const FILE_MAGIC: &[u8; 12] = b"KURAROOTKEY1";
const KEY_LEN: usize = 32;
const WRAP_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    #[error("cannot read or write the root key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a kura root key file")]
    Format { path: PathBuf },
    #[error(
        "root key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The root key, in memory. Zeroized on drop; `Debug` shows nothing secret.
pub struct RootKey {
    aead: aead::LessSafeKey,
    fingerprint: String,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RootKey(fingerprint {})", self.fingerprint)
    }
}

impl RootKey {
    /// Loads the root key from `path`, creating a new random one if the file does not
    /// exist. Returns the key and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), RootKeyError> {
        match fs::read(path) {
            Ok(bytes) => {
                check_permissions(path)?;
                let bytes = SecretBytes::new(bytes);
                Ok((Self::from_file_bytes(path, &bytes)?, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let secret = crate::random_secret(KEY_LEN)?;
                write_new_key_file(path, &secret).map_err(|source| RootKeyError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                Ok((Self::from_secret(&secret)?, true))
            }
            Err(source) => Err(RootKeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn from_file_bytes(path: &Path, bytes: &SecretBytes) -> Result<Self, RootKeyError> {
        let format_error = || RootKeyError::Format {
            path: path.to_owned(),
        };
        let raw = bytes.expose();
        if raw.len() != FILE_MAGIC.len() + KEY_LEN || !raw.starts_with(FILE_MAGIC) {
            return Err(format_error());
        }
        let key = raw.get(FILE_MAGIC.len()..).ok_or_else(format_error)?;
        Ok(Self::from_secret(&SecretBytes::copy_from(key))?)
    }

    /// Builds a root key from 32 secret bytes (tests, or an external key provider).
    pub fn from_secret(secret: &SecretBytes) -> Result<Self, CryptoError> {
        if secret.len() != KEY_LEN {
            return Err(CryptoError::KeyLength);
        }
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, secret.expose())
            .map_err(|_| CryptoError::KeyLength)?;
        let check = hmac_sha256(secret.expose(), b"kura root key fingerprint v1");
        let fingerprint = check.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            aead: aead::LessSafeKey::new(unbound),
            fingerprint,
        })
    }

    /// A short public identifier of this key, stored with the data so that starting
    /// kura with the wrong root key fails clearly instead of producing decryption errors.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Wraps `secret` for storage. `label` names the record it belongs to and must be
    /// given again to unwrap it.
    pub fn wrap(&self, label: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + secret.len() + 16);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(secret);
        let body = out.get_mut(start..).ok_or(CryptoError::Authentication)?;
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(label),
                body,
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Unwraps a value produced by [`RootKey::wrap`] with the same label.
    pub fn unwrap(&self, label: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
        if wrapped.first() != Some(&WRAP_VERSION) || wrapped.len() < 1 + NONCE_LEN + 16 {
            return Err(CryptoError::Authentication);
        }
        let nonce: [u8; NONCE_LEN] = wrapped
            .get(1..1 + NONCE_LEN)
            .and_then(|n| n.try_into().ok())
            .ok_or(CryptoError::Authentication)?;
        let mut in_out = SecretBytes::copy_from(
            wrapped
                .get(1 + NONCE_LEN..)
                .ok_or(CryptoError::Authentication)?,
        );
        let len = self
            .aead
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(label),
                in_out.expose_mut(),
            )
            .map_err(|_| CryptoError::Authentication)?
            .len();
        Ok(SecretBytes::copy_from(
            in_out
                .expose()
                .get(..len)
                .ok_or(CryptoError::Authentication)?,
        ))
    }
}

fn check_permissions(path: &Path) -> Result<(), RootKeyError> {
    let mode = fs::metadata(path)
        .map_err(|source| RootKeyError::Io {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(RootKeyError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// Writes the key durably: a temporary file created with mode 0600, fsync, rename into
/// place, fsync of the directory. A crash leaves either no key file or a complete one.
fn write_new_key_file(path: &Path, secret: &SecretBytes) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut contents = SecretBytes::zeroed(FILE_MAGIC.len() + KEY_LEN);
        contents.expose_mut()[..FILE_MAGIC.len()].copy_from_slice(FILE_MAGIC);
        contents.expose_mut()[FILE_MAGIC.len()..].copy_from_slice(secret.expose());
        file.write_all(contents.expose())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let (first, created) = RootKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let wrapped = first.wrap(b"label", b"material").unwrap();
        let (second, created) = RootKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(
            second.unwrap(b"label", &wrapped).unwrap().expose(),
            b"material"
        );
    }

    #[test]
    fn labels_bind_wrapped_values_to_their_record() {
        let key = RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap();
        let wrapped = key.wrap(b"record-a", b"x").unwrap();
        assert!(key.unwrap(b"record-b", &wrapped).is_err());
        let mut tampered = wrapped.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.unwrap(b"record-a", &tampered).is_err());
        assert!(key.unwrap(b"record-a", &[]).is_err());
    }

    #[test]
    fn refuses_world_readable_key_files_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        RootKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            RootKey::load_or_create(&path),
            Err(RootKeyError::Permissions { .. })
        ));
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            RootKey::load_or_create(&path),
            Err(RootKeyError::Format { .. })
        ));
    }
}
