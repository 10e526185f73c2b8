//! The volume's metadata file, `<backing>/kura-volume.json`, and the backing layout.
//!
//! ```text
//! <backing>/kura-volume.json   this file: ids, KMS key, encryption context, wrapped key
//! <backing>/data/              the encrypted tree (root of the mounted file system)
//! <backing>/journal/           torn-write journal slots (see journal.rs)
//! ```
//!
//! Only the *wrapped* volume key (the KMS ciphertext blob) is stored; the plaintext key is
//! handed to [`crate::Volume::mount`] by the caller, who asked the KMS to decrypt it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::VolumeError;

pub const METADATA_FILE: &str = "kura-volume.json";
pub const DATA_DIR: &str = "data";
pub const JOURNAL_DIR: &str = "journal";
pub const FORMAT_NAME: &str = "kura-volume";
pub const FORMAT_VERSION: u32 = 1;

/// The cipher parameters written into the metadata (informative; version 1 fixes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CipherParams {
    pub contents: String,
    pub block_size: u32,
    pub names: String,
    pub kdf: String,
}

impl Default for CipherParams {
    fn default() -> Self {
        Self {
            contents: "AES-256-GCM".into(),
            block_size: 4096,
            names: "AES-256-GCM-SIV".into(),
            kdf: "HKDF-SHA256".into(),
        }
    }
}

/// Everything stored about a volume besides its encrypted files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMetadata {
    pub format: String,
    pub version: u32,
    pub volume_id: String,
    /// The KMS key that wraps the volume key (an ARN, or whatever id the caller used).
    pub kms_key_arn: String,
    /// The encryption context the wrapped key was made with; Decrypt needs it again.
    pub encryption_context: BTreeMap<String, String>,
    /// The KMS ciphertext blob of the volume key, base64.
    pub wrapped_key: String,
    pub cipher: CipherParams,
    /// Hex key check value (`VolumeCipher::key_check`), recorded on first mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl VolumeMetadata {
    pub fn wrapped_key_bytes(&self) -> Result<Vec<u8>, VolumeError> {
        STANDARD
            .decode(&self.wrapped_key)
            .map_err(|_| VolumeError::Metadata("wrapped_key is not valid base64".into()))
    }

    pub fn set_wrapped_key(&mut self, blob: &[u8]) {
        self.wrapped_key = STANDARD.encode(blob);
    }

    pub fn load(backing_dir: &Path) -> Result<Self, VolumeError> {
        let path = backing_dir.join(METADATA_FILE);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VolumeError::NotAVolume(backing_dir.to_path_buf())
            } else {
                VolumeError::io(format!("reading {}", path.display()), e)
            }
        })?;
        let meta: Self = serde_json::from_str(&text)
            .map_err(|e| VolumeError::Metadata(format!("{}: {e}", path.display())))?;
        if meta.format != FORMAT_NAME {
            return Err(VolumeError::Metadata(format!(
                "{}: not a kura volume (format {:?})",
                path.display(),
                meta.format
            )));
        }
        if meta.version != FORMAT_VERSION {
            return Err(VolumeError::Metadata(format!(
                "{}: unsupported volume format version {}",
                path.display(),
                meta.version
            )));
        }
        Ok(meta)
    }

    /// Writes the metadata atomically: temporary file (0600), fsync, rename, fsync of the
    /// directory.
    pub fn store(&self, backing_dir: &Path) -> Result<(), VolumeError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| VolumeError::Metadata(e.to_string()))?;
        let tmp = backing_dir.join(format!(".{METADATA_FILE}.tmp"));
        let final_path = backing_dir.join(METADATA_FILE);
        let ctx = |what: &str| format!("{what} {}", final_path.display());
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| VolumeError::io(ctx("writing"), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|e| VolumeError::io(ctx("writing"), e))?;
        drop(file);
        fs::rename(&tmp, &final_path).map_err(|e| VolumeError::io(ctx("renaming"), e))?;
        sync_dir(backing_dir)
    }
}

/// What a caller supplies to create a volume (the wrapped key comes separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    /// Usually [`new_volume_id`]; it should also appear in the encryption context.
    pub volume_id: String,
    pub kms_key_arn: String,
    pub encryption_context: BTreeMap<String, String>,
}

/// A fresh random volume id (`vol-` and 32 hex digits).
pub fn new_volume_id() -> String {
    format!("vol-{}", uuid::Uuid::new_v4().simple())
}

/// Creates the backing layout and writes the metadata. Refuses a non-empty directory.
pub(crate) fn create(
    backing_dir: &Path,
    wrapped_key: &[u8],
    new: NewVolume,
) -> Result<VolumeMetadata, VolumeError> {
    match fs::read_dir(backing_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(VolumeError::Metadata(format!(
                    "{} is not empty; a volume needs an empty or new directory",
                    backing_dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(backing_dir)
                .map_err(|e| VolumeError::io(format!("creating {}", backing_dir.display()), e))?;
        }
        Err(e) => {
            return Err(VolumeError::io(
                format!("reading {}", backing_dir.display()),
                e,
            ));
        }
    }
    let data = backing_dir.join(DATA_DIR);
    let journal = backing_dir.join(JOURNAL_DIR);
    for (dir, mode) in [(&data, 0o755), (&journal, 0o700)] {
        fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| VolumeError::io(format!("creating {}", dir.display()), e))?;
    }
    write_dir_id(&data)?;
    sync_dir(&data)?;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut meta = VolumeMetadata {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        volume_id: new.volume_id,
        kms_key_arn: new.kms_key_arn,
        encryption_context: new.encryption_context,
        wrapped_key: String::new(),
        cipher: CipherParams::default(),
        key_check: None,
        created_at,
    };
    meta.set_wrapped_key(wrapped_key);
    meta.store(backing_dir)?;
    Ok(meta)
}

/// Writes a fresh random directory id into `dir/.kura-dirid` (0400 is not needed: the
/// daemon runs as root; 0644 keeps `ls` of the backing dir quiet).
pub(crate) fn write_dir_id(dir: &Path) -> Result<[u8; 16], VolumeError> {
    let mut id = [0u8; 16];
    kura_crypto::fill_random(&mut id).map_err(|_| VolumeError::Crypto)?;
    let path: PathBuf = dir.join(crate::names::DIR_ID_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| VolumeError::io(format!("creating {}", path.display()), e))?;
    file.write_all(&id)
        .and_then(|()| file.sync_all())
        .map_err(|e| VolumeError::io(format!("writing {}", path.display()), e))?;
    Ok(id)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn new() -> NewVolume {
        NewVolume {
            volume_id: new_volume_id(),
            kms_key_arn: "arn:aws:kms:us-east-1:000000000000:key/x".into(),
            encryption_context: [("kura:volume-id".to_owned(), "v".to_owned())].into(),
        }
    }

    #[test]
    fn create_load_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let meta = create(&dir, b"blob", new()).unwrap();
        assert_eq!(meta.wrapped_key_bytes().unwrap(), b"blob");
        assert!(dir.join(DATA_DIR).join(crate::names::DIR_ID_FILE).is_file());
        assert!(dir.join(JOURNAL_DIR).is_dir());
        let loaded = VolumeMetadata::load(&dir).unwrap();
        assert_eq!(loaded, meta);
        // refuses to create over an existing volume
        assert!(create(&dir, b"blob", new()).is_err());
        // a directory that is not a volume
        assert!(matches!(
            VolumeMetadata::load(tmp.path()),
            Err(VolumeError::NotAVolume(_))
        ));
        assert!(new_volume_id().starts_with("vol-"));
    }
}
