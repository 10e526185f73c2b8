//! The data plane of snapshots: capturing a database's image into the chunk store,
//! writing an image back for a restore, and re-encrypting an image under a fresh volume
//! key for a copy under another KMS key.
//!
//! A snapshot's image is its database's *image directory* (see
//! [`crate::storage::image_dir`]): for an encrypted database the volume's backing
//! directory, which is ciphertext only, so capturing, storing and restoring never see
//! plaintext. Only re-encryption does, block by block in memory
//! ([`kura_volume::copy_into_volume`], nothing mounted), from a source image written out
//! of the chunk store into a private scratch directory.
//!
//! Must not: talk to the KMS (the API layer brings plaintext keys, obtained through
//! [`crate::keys`]), or touch the records of databases.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kura_crypto::SecretBytes;

use crate::chunks::{ChunkStore, DirectoryStore, Persist};
use crate::error::{RdsError, RdsResult};
use crate::storage::VolumeKeyInfo;

/// The chunk store and a scratch directory for re-encryption.
pub(crate) struct SnapshotData {
    chunks: ChunkStore,
    scratch: PathBuf,
}

/// Where an image comes from when it is re-encrypted.
pub(crate) struct SourceImage<'a> {
    pub data_id: &'a str,
    /// The volume key, for an encrypted image; `None` for plain files.
    pub key: Option<SecretBytes>,
}

/// The volume an image is re-encrypted into.
pub(crate) struct TargetVolume {
    pub info: VolumeKeyInfo,
    pub key: SecretBytes,
}

fn io_error(action: &'static str) -> impl Fn(std::io::Error) -> RdsError {
    move |e| RdsError::Internal(format!("{action}: {e}"))
}

impl SnapshotData {
    pub fn new(base: &Path) -> Self {
        Self {
            chunks: ChunkStore::new(Box::new(DirectoryStore::new(base.join("snapshots")))),
            scratch: base.join("scratch"),
        }
    }

    /// Clears what a killed kura left in the scratch directory: source images of
    /// re-encryptions in progress, and copies that cannot be resumed (from another boot
    /// of the machine). Call before any re-encryption starts.
    pub fn clear_scratch(&self) {
        let Ok(entries) = std::fs::read_dir(&self.scratch) else {
            return;
        };
        for work in entries.filter_map(Result::ok).map(|e| e.path()) {
            if resumable(&work) {
                continue;
            }
            if let Err(error) = std::fs::remove_dir_all(&work) {
                tracing::warn!(dir = %work.display(), %error, "could not clear a scratch directory");
            }
        }
    }

    /// Stores the image under `image_dir` as `data_id`. The caller holds the database's
    /// writes (see `Runtime::freeze`) for the duration.
    pub async fn capture(
        &self,
        data_id: &str,
        image_dir: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> RdsResult<()> {
        self.chunks
            .capture(data_id, image_dir, progress)
            .await
            .map(|_| ())
            .map_err(io_error("capturing the snapshot"))
    }

    /// A second snapshot with the same image: only the manifest is written, the chunks
    /// are shared.
    pub fn duplicate(&self, from: &str, to: &str) -> RdsResult<()> {
        let manifest = self
            .chunks
            .manifest(from)
            .map_err(io_error("reading the snapshot manifest"))?;
        self.chunks
            .put_manifest(to, &manifest)
            .map_err(io_error("writing the snapshot manifest"))
    }

    /// Writes the image of `data_id` into `target` (which must be empty or absent).
    pub async fn materialize(
        &self,
        data_id: &str,
        target: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> RdsResult<()> {
        if target.exists() {
            std::fs::remove_dir(target).map_err(io_error("preparing the restore target"))?;
        }
        self.chunks
            .materialize(data_id, target, Persist::Durable, progress)
            .await
            .map_err(io_error("restoring the snapshot's files"))
    }

    /// Forgets a snapshot's image; chunks no other snapshot uses are removed.
    pub async fn remove(&self, data_id: &str) -> RdsResult<()> {
        self.chunks
            .delete_manifest(data_id)
            .map_err(io_error("deleting the snapshot manifest"))?;
        self.chunks
            .collect_garbage()
            .await
            .map(|_| ())
            .map_err(io_error("collecting unused snapshot chunks"))
    }

    /// Writes an encrypted volume at `target_backing` holding the same files as
    /// `source`, under the target's volume key (decrypted from its wrapped key, which
    /// the caller keeps). Nothing of the source's key survives in the result. A target
    /// left by an interrupted call in this boot of the machine, under the same wrapped
    /// key, is resumed: finished files are kept. With [`Persist::Durable`] (a database's
    /// own volume) the result is durable when it returns; a copy's volume need not be,
    /// since it is captured into the chunk store, durably, next.
    pub async fn reencrypt(
        &self,
        source: SourceImage<'_>,
        target_backing: &Path,
        target: TargetVolume,
        persist: Persist,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> RdsResult<()> {
        let work = self.scratch.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&work).map_err(io_error("creating a scratch directory"))?;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("securing the scratch directory"))?;
        let source_image = work.join("source");
        let outcome = async {
            self.chunks
                .materialize(source.data_id, &source_image, Persist::Scratch, &|_, _| {})
                .await
                .map_err(io_error("writing out the source image"))?;
            // The copy reads and writes files for a while; keep the async workers free.
            tokio::task::block_in_place(|| {
                let volume = open_or_create_target(target_backing, &target.info)?;
                let from = match source.key {
                    Some(key) => kura_volume::CopySource::Volume {
                        backing_dir: &source_image,
                        key,
                    },
                    None => kura_volume::CopySource::Plain(&source_image),
                };
                kura_volume::copy_into_volume(from, &volume, target.key, &mut |done, total| {
                    progress(done, total)
                })
                .map_err(|e| RdsError::Internal(format!("re-encrypting the image: {e}")))?;
                std::fs::remove_file(target_backing.join(COPY_MARKER))
                    .map_err(io_error("finishing the re-encrypted volume"))?;
                match persist {
                    Persist::Durable => crate::chunks::sync_tree(target_backing)
                        .map_err(io_error("making the re-encrypted volume durable")),
                    Persist::Scratch => Ok(()),
                }
            })
        }
        .await;
        if let Err(error) = std::fs::remove_dir_all(&work) {
            tracing::warn!(dir = %work.display(), %error, "could not remove a scratch directory");
        }
        outcome
    }
}

/// A file in a volume being written by [`SnapshotData::reencrypt`], holding the boot id
/// of the machine: its files survive a killed kura (they are in the page cache) but not
/// a power loss, so a copy is resumed only within the same boot.
const COPY_MARKER: &str = "kura-copy-in-progress";

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// True if `dir` is a volume an interrupted copy left in this boot of the machine.
fn resumable(dir: &Path) -> bool {
    match (std::fs::read_to_string(dir.join(COPY_MARKER)), boot_id()) {
        (Ok(marker), Some(boot)) => marker.trim() == boot,
        _ => false,
    }
}

/// The target volume of a copy: the one an interrupted copy left, if it can be resumed
/// (same boot, same wrapped key), or a new one.
fn open_or_create_target(backing: &Path, info: &VolumeKeyInfo) -> RdsResult<kura_volume::Volume> {
    let volume_error = |action: &'static str| {
        move |e: kura_volume::VolumeError| RdsError::Internal(format!("{action}: {e}"))
    };
    if resumable(backing)
        && let Ok(volume) = kura_volume::Volume::open(backing)
        && volume
            .wrapped_key()
            .is_ok_and(|key| key == info.wrapped_key)
    {
        tracing::info!(volume = %backing.display(), "resuming an interrupted re-encryption");
        return Ok(volume);
    }
    match std::fs::remove_dir_all(backing) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error("clearing the re-encryption target")(e));
        }
        _ => {}
    }
    let new = kura_volume::NewVolume {
        volume_id: kura_volume::new_volume_id(),
        kms_key_arn: info.kms_key_arn.clone(),
        encryption_context: info.encryption_context.clone(),
    };
    let volume = kura_volume::Volume::create(backing, &info.wrapped_key, new)
        .map_err(volume_error("creating the re-encrypted volume"))?;
    std::fs::write(backing.join(COPY_MARKER), boot_id().unwrap_or_default())
        .map_err(io_error("marking the re-encrypted volume"))?;
    Ok(volume)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn info(wrapped: &[u8]) -> VolumeKeyInfo {
        VolumeKeyInfo {
            kms_key_arn: "arn:aws:kms:us-east-1:000000000000:key/k".into(),
            wrapped_key: wrapped.to_vec(),
            encryption_context: [("aws:rds:db-id".to_owned(), "db-X".to_owned())].into(),
        }
    }

    #[test]
    fn an_interrupted_copy_is_resumed_only_in_the_same_boot_under_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let data = SnapshotData::new(tmp.path());
        let target = tmp.path().join("scratch").join("snap-data-1");
        let first = open_or_create_target(&target, &info(b"wrapped-1")).unwrap();
        std::fs::write(target.join("data").join("finished-file"), b"x").unwrap();
        // A killed kura restarts: the scratch directory keeps the copy, the copy resumes.
        let leftover = tmp.path().join("scratch").join("some-source-image");
        std::fs::create_dir_all(&leftover).unwrap();
        data.clear_scratch();
        assert!(!leftover.exists());
        let again = open_or_create_target(&target, &info(b"wrapped-1")).unwrap();
        assert_eq!(again.id(), first.id());
        assert!(target.join("data").join("finished-file").exists());
        // Another wrapped key: the copy starts over.
        let other_key = open_or_create_target(&target, &info(b"wrapped-2")).unwrap();
        assert_ne!(other_key.id(), first.id());
        assert!(!target.join("data").join("finished-file").exists());
        // Another boot (a power loss may have torn the files): cleared at start-up.
        std::fs::write(target.join(COPY_MARKER), "another-boot").unwrap();
        data.clear_scratch();
        assert!(!target.exists());
    }
}
