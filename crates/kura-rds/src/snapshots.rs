//! The data plane of snapshots: capturing a database's image into the chunk store,
//! writing an image back for a restore, and re-encrypting an image under a fresh volume
//! key for a copy under another KMS key.
//!
//! A snapshot's image is its database's *image directory* (see
//! [`crate::storage::image_dir`]): for an encrypted database the volume's backing
//! directory, which is ciphertext only, so capturing, storing and restoring never see
//! plaintext. Only re-encryption does, through two volumes mounted side by side in a
//! private scratch directory, and only in memory pages of the FUSE mounts.
//!
//! Must not: talk to the KMS (the API layer brings plaintext keys, obtained through
//! [`crate::keys`]), or touch the records of databases.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kura_crypto::SecretBytes;

use crate::chunks::{ChunkStore, DirectoryStore};
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

    /// Clears what a killed kura left in the scratch directory: dead FUSE mounts of
    /// re-encryptions in progress and their half-written files. Call before any
    /// re-encryption starts.
    pub fn clear_scratch(&self) {
        let Ok(entries) = std::fs::read_dir(&self.scratch) else {
            return;
        };
        for work in entries.filter_map(Result::ok).map(|e| e.path()) {
            for mount_point in ["source-mnt", "target-mnt"] {
                let _ = kura_volume::clear_dead_mount(&work.join(mount_point));
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
            .materialize(data_id, target, progress)
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

    /// Writes a new encrypted volume at `target_backing` holding the same files as
    /// `source`, under the target's fresh volume key. Nothing of the source's key
    /// survives in the result.
    pub async fn reencrypt(
        &self,
        source: SourceImage<'_>,
        target_backing: &Path,
        target: TargetVolume,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> RdsResult<()> {
        let work = self.scratch.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&work).map_err(io_error("creating a scratch directory"))?;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("securing the scratch directory"))?;
        let source_image = work.join("source");
        let outcome = async {
            self.materialize(source.data_id, &source_image, &|_, _| {})
                .await?;
            // Mounting and copying block; keep the async workers free meanwhile.
            tokio::task::block_in_place(|| {
                copy_between_volumes(
                    &source_image,
                    source.key,
                    &work,
                    target_backing,
                    target,
                    progress,
                )
            })
        }
        .await;
        if let Err(error) = std::fs::remove_dir_all(&work) {
            tracing::warn!(dir = %work.display(), %error, "could not remove a scratch directory");
        }
        outcome
    }
}

/// Mounts the source (if encrypted) and a new target volume, and copies every file.
fn copy_between_volumes(
    source_image: &Path,
    source_key: Option<SecretBytes>,
    work: &Path,
    target_backing: &Path,
    target: TargetVolume,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> RdsResult<()> {
    let volume_error = |action: &'static str| {
        move |e: kura_volume::VolumeError| RdsError::Internal(format!("{action}: {e}"))
    };
    // Neither volume needs the torn-write journal: a copy interrupted by a crash is
    // redone from the start, never resumed from these files.
    let options = kura_volume::MountOptions {
        journal: false,
        ..kura_volume::MountOptions::default()
    };
    let mount = |backing: &Path, at: &Path, key: SecretBytes| {
        std::fs::create_dir_all(at).map_err(io_error("creating a mount point"))?;
        kura_volume::Volume::open(backing)
            .and_then(|v| v.mount(at, key, options.clone()))
            .map_err(volume_error("mounting a volume for re-encryption"))
    };
    let source = match source_key {
        Some(key) => Some(mount(source_image, &work.join("source-mnt"), key)?),
        None => None,
    };
    let source_root = source
        .as_ref()
        .map_or(source_image.to_owned(), |m| m.mount_point().to_owned());
    let new = kura_volume::NewVolume {
        volume_id: kura_volume::new_volume_id(),
        kms_key_arn: target.info.kms_key_arn.clone(),
        encryption_context: target.info.encryption_context.clone(),
    };
    kura_volume::Volume::create(target_backing, &target.info.wrapped_key, new)
        .map_err(volume_error("creating the re-encrypted volume"))?;
    let destination = mount(target_backing, &work.join("target-mnt"), target.key)?;
    let total = tree_size(&source_root);
    let mut done = 0u64;
    let copied = copy_tree(&source_root, destination.mount_point(), &mut |bytes| {
        done += bytes;
        progress(done, total);
    });
    // Unmounting the target flushes its cached writes into the backing files: a failure
    // there is a failed copy.
    let flushed = destination
        .unmount()
        .map_err(volume_error("flushing the re-encrypted volume"));
    if flushed.is_err() {
        destination.force_unmount();
    }
    if let Some(source) = source
        && source.unmount().is_err()
    {
        source.force_unmount();
    }
    copied.map_err(io_error("copying files into the re-encrypted volume"))?;
    flushed
}

/// Bytes in regular files under `root`.
fn tree_size(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => tree_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Copies the tree under `from` into the existing directory `to`, keeping modes,
/// owners and symbolic links (engines check that their files belong to them).
fn copy_tree(from: &Path, to: &Path, copied: &mut dyn FnMut(u64)) -> std::io::Result<()> {
    keep_owner_and_mode(&std::fs::symlink_metadata(from)?, to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&source)?;
        if meta.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&source, &target, copied)?;
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
            std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
        } else if meta.is_file() {
            // No fsync: the copy's durability comes from the chunk store it is captured
            // into after the unmount has flushed every write.
            let bytes = std::fs::copy(&source, &target)?;
            keep_owner_and_mode(&meta, &target)?;
            copied(bytes);
        }
    }
    Ok(())
}

fn keep_owner_and_mode(meta: &std::fs::Metadata, path: &Path) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}
