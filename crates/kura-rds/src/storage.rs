//! Where a database's files live: a plain directory for unencrypted databases, an
//! encrypted volume for encrypted ones. The runtime sees only this seam.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kura_crypto::SecretBytes;

use crate::error::{RdsError, RdsResult};

/// The directory under a unit's storage directory that holds its image: what a
/// snapshot copies and a restore writes back. For a volume it is the backing directory
/// (ciphertext only); never the mount point.
pub(crate) fn image_dir(storage_dir: &Path, encrypted: bool) -> PathBuf {
    storage_dir.join(if encrypted { "backing" } else { "files" })
}

/// What an encrypted volume records about its key: only the wrapped form.
pub(crate) struct VolumeKeyInfo {
    pub kms_key_arn: String,
    pub wrapped_key: Vec<u8>,
    pub encryption_context: BTreeMap<String, String>,
}

/// Opened storage: a directory the engine can use, until it is locked or closed.
#[async_trait]
pub(crate) trait OpenStorage: Send + Sync {
    /// The directory under which the engine's data directory lives.
    fn root(&self) -> &Path;
    /// Makes every further access fail at once (the key became unusable). The storage
    /// stays open, so that [`OpenStorage::unlock`] can resume it.
    fn lock(&self);
    /// Resumes access with the volume key.
    fn unlock(&self, key: SecretBytes) -> RdsResult<()>;
    /// Holds writes until the guard is dropped, so that the files under the storage's
    /// image directory form a crash-consistent image (for snapshots). `None`: this
    /// storage has no gate of its own (the runtime pauses the engine instead).
    async fn freeze(&self) -> RdsResult<Option<Box<dyn Send>>>;
    /// Releases the storage (unmount); the key is forgotten.
    async fn close(self: Box<Self>) -> RdsResult<()>;
}

/// Creates and opens storage of one kind.
#[async_trait]
pub(crate) trait StorageKind: Send + Sync {
    /// Prepares new, empty storage under `dir` (`key`: the wrapped key of an encrypted one).
    async fn create(&self, dir: &Path, key: Option<&VolumeKeyInfo>) -> RdsResult<()>;
    /// Opens existing storage under `dir`.
    async fn open(&self, dir: &Path, key: Option<SecretBytes>) -> RdsResult<Box<dyn OpenStorage>>;
}

/// Unencrypted storage: a plain directory.
pub(crate) struct PlainStorage;

struct PlainOpen {
    root: PathBuf,
}

#[async_trait]
impl StorageKind for PlainStorage {
    async fn create(&self, dir: &Path, _key: Option<&VolumeKeyInfo>) -> RdsResult<()> {
        let root = image_dir(dir, false);
        std::fs::create_dir_all(&root)
            .map_err(|e| RdsError::Internal(format!("creating {}: {e}", root.display())))?;
        open_to_engine_users(dir)?;
        open_to_engine_users(&root)
    }

    async fn open(&self, dir: &Path, _key: Option<SecretBytes>) -> RdsResult<Box<dyn OpenStorage>> {
        Ok(Box::new(PlainOpen {
            root: image_dir(dir, false),
        }))
    }
}

#[async_trait]
impl OpenStorage for PlainOpen {
    fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) {}

    fn unlock(&self, _key: SecretBytes) -> RdsResult<()> {
        Ok(())
    }

    async fn freeze(&self) -> RdsResult<Option<Box<dyn Send>>> {
        Ok(None)
    }

    async fn close(self: Box<Self>) -> RdsResult<()> {
        Ok(())
    }
}

/// Engines run as their own system users; they must be able to traverse to their files.
/// How a database's volume is mounted: without the kernel's writeback cache. An engine
/// commits with a write and an fsync of its log; through the cache, each commit also
/// waits for pages still being written back and for the file-time update the cache
/// sends before the fsync. Written through, PostgreSQL's TPC-B-like load ran at 0.96x
/// of plain disk instead of 0.82x; bulk loads are slower (`pgbench -i` 3.8 s against
/// 1.4 s), because each 8 KiB write is then a round trip (BENCHMARKS.md).
fn database_mount() -> kura_volume::MountOptions {
    kura_volume::MountOptions {
        writeback_cache: false,
        ..kura_volume::MountOptions::default()
    }
}

pub(crate) fn open_to_engine_users(dir: &Path) -> RdsResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| RdsError::Internal(format!("chmod {}: {e}", dir.display())))
}

/// The directory an encrypted volume is mounted on, open to the engines' users.
pub(crate) fn create_mount_point(storage_dir: &Path) -> RdsResult<()> {
    let mount_point = storage_dir.join("mnt");
    std::fs::create_dir_all(&mount_point)
        .map_err(|e| RdsError::Internal(format!("creating the mount point: {e}")))?;
    open_to_engine_users(&mount_point)
}

/// Gives an encrypted volume restored from a snapshot its new owner's wrapped key.
pub(crate) fn rewrap_volume(storage_dir: &Path, key: &VolumeKeyInfo) -> RdsResult<()> {
    kura_volume::Volume::open(&image_dir(storage_dir, true))
        .and_then(|mut volume| {
            volume.rewrap(
                &key.kms_key_arn,
                key.encryption_context.clone(),
                &key.wrapped_key,
            )
        })
        .map_err(volume_error("re-wrapping the volume key"))
}

/// Encrypted storage: a kura volume (FUSE) whose backing directory holds only ciphertext.
pub(crate) struct VolumeStorage;

struct OpenVolume {
    mounted: std::sync::Arc<kura_volume::MountedVolume>,
}

fn volume_error(action: &str) -> impl Fn(kura_volume::VolumeError) -> RdsError + '_ {
    move |e| RdsError::Internal(format!("{action}: {e}"))
}

#[async_trait]
impl StorageKind for VolumeStorage {
    async fn create(&self, dir: &Path, key: Option<&VolumeKeyInfo>) -> RdsResult<()> {
        let key = key.ok_or_else(|| {
            RdsError::Internal("an encrypted volume needs its wrapped key".into())
        })?;
        let backing = image_dir(dir, true);
        create_mount_point(dir)?;
        let new = kura_volume::NewVolume {
            volume_id: kura_volume::new_volume_id(),
            kms_key_arn: key.kms_key_arn.clone(),
            encryption_context: key.encryption_context.clone(),
        };
        kura_volume::Volume::create(&backing, &key.wrapped_key, new)
            .map(|_| ())
            .map_err(volume_error("creating the volume"))
    }

    async fn open(&self, dir: &Path, key: Option<SecretBytes>) -> RdsResult<Box<dyn OpenStorage>> {
        let key = key.ok_or_else(|| {
            RdsError::Internal("an encrypted volume opens only with its key".into())
        })?;
        let (backing, mount_point) = (image_dir(dir, true), dir.join("mnt"));
        let mounted = tokio::task::spawn_blocking(move || {
            // A volume process that died (kura killed) leaves a dead or dying mount
            // behind; nothing of this kura is mounted here (the unit has no storage open).
            kura_volume::detach_stale_mount(&mount_point)?;
            kura_volume::Volume::open(&backing)?.mount(&mount_point, key, database_mount())
        })
        .await
        .map_err(|e| RdsError::Internal(format!("mounting the volume: {e}")))?
        .map_err(volume_error("mounting the volume"))?;
        let root = mounted.mount_point().to_owned();
        open_to_engine_users(&root)?;
        Ok(Box::new(OpenVolume {
            mounted: std::sync::Arc::new(mounted),
        }))
    }
}

#[async_trait]
impl OpenStorage for OpenVolume {
    fn root(&self) -> &Path {
        self.mounted.mount_point()
    }

    fn lock(&self) {
        self.mounted.lock();
    }

    fn unlock(&self, key: SecretBytes) -> RdsResult<()> {
        self.mounted
            .unlock(key)
            .map_err(volume_error("unlocking the volume"))
    }

    async fn freeze(&self) -> RdsResult<Option<Box<dyn Send>>> {
        let mounted = self.mounted.clone();
        let guard = tokio::task::spawn_blocking(move || mounted.freeze())
            .await
            .map_err(|e| RdsError::Internal(format!("freezing the volume: {e}")))?;
        Ok(Some(Box::new(guard)))
    }

    async fn close(self: Box<Self>) -> RdsResult<()> {
        let mounted = self.mounted.clone();
        tokio::task::spawn_blocking(move || {
            if mounted.unmount().is_err() {
                mounted.force_unmount();
            }
        })
        .await
        .map_err(|e| RdsError::Internal(format!("unmounting the volume: {e}")))
    }
}
