//! The library API: create, open and mount volumes; lock, unlock, freeze and unmount them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kura_crypto::SecretBytes;
use kura_crypto::volume::{VOLUME_KEY_LEN, VolumeCipher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::fs::{Fs, FsOptions, Shared};
use crate::journal::Journal;
use crate::meta::{self, DATA_DIR, JOURNAL_DIR, NewVolume, VolumeMetadata};
use crate::{VolumeError, sys};

/// How a volume is served.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// FUSE worker threads (each handles one request at a time). The default is one per
    /// CPU, at most 4: more threads than CPUs only add context switches (on 2 CPUs, 2
    /// threads served pgbench's TPC-B-like load about 2% faster than 4).
    pub threads: usize,
    /// Let the kernel cache writes (FUSE writeback cache): a `write()` no longer waits for
    /// the daemon; data reaches the volume on fsync, close, or writeback.
    pub writeback_cache: bool,
    /// How long the kernel may cache attributes and names.
    pub attr_ttl: Duration,
    /// Largest write request the kernel sends (bytes).
    pub max_write: u32,
    /// The torn-write journal (see `journal.rs`). Turning it off saves a copy of each
    /// overwritten block but lets a `kill -9` in the middle of a write destroy the block
    /// being overwritten: only for measuring what the journal costs.
    pub journal: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(4, |n| n.get().min(4)),
            writeback_cache: true,
            attr_ttl: Duration::from_secs(1),
            max_write: 1 << 20,
            journal: true,
        }
    }
}

/// A volume on disk: its backing directory and metadata.
#[derive(Debug, Clone)]
pub struct Volume {
    backing_dir: PathBuf,
    meta: VolumeMetadata,
}

impl Volume {
    /// Creates a volume in `backing_dir` (new or empty), storing only the wrapped key.
    pub fn create(
        backing_dir: &Path,
        wrapped_key: &[u8],
        new: NewVolume,
    ) -> Result<Self, VolumeError> {
        let meta = meta::create(backing_dir, wrapped_key, new)?;
        Ok(Self {
            backing_dir: backing_dir.to_path_buf(),
            meta,
        })
    }

    /// Opens an existing volume (reads its metadata).
    pub fn open(backing_dir: &Path) -> Result<Self, VolumeError> {
        let meta = VolumeMetadata::load(backing_dir)?;
        Ok(Self {
            backing_dir: backing_dir
                .canonicalize()
                .unwrap_or_else(|_| backing_dir.to_path_buf()),
            meta,
        })
    }

    pub fn id(&self) -> &str {
        &self.meta.volume_id
    }

    pub fn metadata(&self) -> &VolumeMetadata {
        &self.meta
    }

    pub fn backing_dir(&self) -> &Path {
        &self.backing_dir
    }

    /// The KMS ciphertext blob to decrypt (with [`Self::encryption_context`]) for the key.
    pub fn wrapped_key(&self) -> Result<Vec<u8>, VolumeError> {
        self.meta.wrapped_key_bytes()
    }

    pub fn encryption_context(&self) -> &BTreeMap<String, String> {
        &self.meta.encryption_context
    }

    /// Checks `key` against the key check value recorded at the first mount.
    pub fn check_key(&self, key: &SecretBytes) -> Result<(), VolumeError> {
        if key.len() != VOLUME_KEY_LEN {
            return Err(VolumeError::KeyLength);
        }
        let Some(recorded) = &self.meta.key_check else {
            return Ok(());
        };
        let check = VolumeCipher::key_check(key).map_err(|_| VolumeError::Crypto)?;
        if kura_crypto::constant_time_eq(hex(&check).as_bytes(), recorded.as_bytes()) {
            Ok(())
        } else {
            Err(VolumeError::WrongKey)
        }
    }

    /// Replaces the wrapped key (the same volume key wrapped under another KMS key or
    /// context, as a snapshot copy under another key needs).
    pub fn rewrap(
        &mut self,
        kms_key_arn: &str,
        encryption_context: BTreeMap<String, String>,
        wrapped_key: &[u8],
    ) -> Result<(), VolumeError> {
        let mut meta = self.meta.clone();
        meta.kms_key_arn = kms_key_arn.to_owned();
        meta.encryption_context = encryption_context;
        meta.set_wrapped_key(wrapped_key);
        meta.store(&self.backing_dir)?;
        self.meta = meta;
        Ok(())
    }

    /// Mounts the volume at `mount_point` with its plaintext `key` (which is consumed and
    /// zeroized once the volume's keys are derived from it). FUSE runs on its own threads;
    /// this returns once the file system answers.
    pub fn mount(
        &self,
        mount_point: &Path,
        key: SecretBytes,
        options: MountOptions,
    ) -> Result<MountedVolume, VolumeError> {
        sys::check_fuse_available(mount_point)?;
        self.check_key(&key)?;
        let mut meta = self.meta.clone();
        if meta.key_check.is_none() {
            let check = VolumeCipher::key_check(&key).map_err(|_| VolumeError::Crypto)?;
            meta.key_check = Some(hex(&check));
            meta.store(&self.backing_dir)?;
        }
        let cipher = VolumeCipher::new(&key).map_err(|_| VolumeError::KeyLength)?;
        drop(key);

        let data = self.backing_dir.join(DATA_DIR);
        let journal_dir = self.backing_dir.join(JOURNAL_DIR);
        let replayed = Journal::recover(&journal_dir, &data, &cipher)
            .map_err(|e| VolumeError::io("replaying the journal", e))?;
        if replayed > 0 {
            tracing::warn!(
                volume = %meta.volume_id,
                replayed,
                "replayed writes interrupted by a crash"
            );
        }
        sys::raise_nofile_limit();
        let journal = Journal::open(&journal_dir, &data)
            .map_err(|e| VolumeError::io("opening the journal", e))?;
        let shared = Shared::new(
            &data,
            journal,
            cipher,
            FsOptions {
                attr_ttl: options.attr_ttl,
                writeback_cache: options.writeback_cache,
                max_write: options.max_write,
                journal: options.journal,
            },
        )
        .map_err(|e| VolumeError::io(format!("opening {}", data.display()), e))?;

        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(format!("kura:{}", meta.volume_id)),
            fuser::MountOption::Subtype("kura".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoAtime,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::RW,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(options.threads.max(1));
        config.clone_fd = true;
        let session = fuser::Session::new(
            Fs {
                shared: shared.clone(),
            },
            mount_point,
            &config,
        )
        .map_err(|e| VolumeError::Mount(format!("{}: {e}", mount_point.display())))?;
        let _ = shared.notifier.set(session.notifier());
        let thread = std::thread::Builder::new()
            .name(format!("kura-volume-{}", short(&meta.volume_id)))
            .spawn(move || session.run())
            .map_err(|e| VolumeError::io("starting the FUSE session", e))?;
        let mount_point = mount_point
            .canonicalize()
            .unwrap_or_else(|_| mount_point.to_path_buf());
        // The FUSE connection's number (for aborting it on a forced unmount).
        let connection = nix::sys::stat::stat(&mount_point)
            .ok()
            .map(|st| nix::sys::stat::minor(st.st_dev));
        tracing::info!(volume = %meta.volume_id, mount_point = %mount_point.display(), "volume mounted");
        Ok(MountedVolume {
            shared,
            volume: Self {
                backing_dir: self.backing_dir.clone(),
                meta,
            },
            mount_point,
            connection,
            session: Mutex::new(Some(thread)),
            mounted: AtomicBool::new(true),
        })
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub volume_id: String,
    pub backing_dir: String,
    pub mount_point: String,
    pub kms_key_arn: String,
    pub locked: bool,
    pub frozen: bool,
    pub inodes: usize,
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    /// Operations refused because the volume was locked.
    pub refused: u64,
    pub errors: u64,
}

/// A mounted volume. Dropping it unmounts (forcibly, if it is still in use).
pub struct MountedVolume {
    shared: Arc<Shared>,
    volume: Volume,
    mount_point: PathBuf,
    connection: Option<u64>,
    session: Mutex<Option<JoinHandle<io::Result<()>>>>,
    mounted: AtomicBool,
}

impl std::fmt::Debug for MountedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedVolume")
            .field("volume_id", &self.volume.id())
            .field("mount_point", &self.mount_point)
            .field("locked", &self.is_locked())
            .finish()
    }
}

/// Holds a volume frozen: writes wait until this is dropped.
pub struct FreezeGuard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FreezeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreezeGuard")
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        self.shared.gate.thaw();
    }
}

impl MountedVolume {
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// Drops the volume's keys. From now on every operation fails at once with EIO
    /// (operations in flight end with EIO too), and the kernel's cached plaintext pages
    /// are dropped. The mount stays. Blocks for at most about half a second.
    pub fn lock(&self) {
        self.shared.lock();
        tracing::info!(volume = %self.volume.id(), "volume locked");
    }

    /// Resumes service with `key`, which must be the volume's key.
    pub fn unlock(&self, key: SecretBytes) -> Result<(), VolumeError> {
        self.volume.check_key(&key)?;
        let cipher = VolumeCipher::new(&key).map_err(|_| VolumeError::KeyLength)?;
        drop(key);
        self.shared.unlock(cipher);
        tracing::info!(volume = %self.volume.id(), "volume unlocked");
        Ok(())
    }

    pub fn is_locked(&self) -> bool {
        self.shared.is_locked()
    }

    /// Flushes the kernel's cached writes to the volume, then blocks new writes and waits
    /// for those in flight. The backing directory is then a crash-consistent image until
    /// the guard is dropped. Blocking: from async code, call it in `spawn_blocking`.
    pub fn freeze(&self) -> FreezeGuard {
        if !self.is_locked() {
            self.syncfs();
        }
        self.shared.gate.freeze();
        FreezeGuard {
            shared: self.shared.clone(),
        }
    }

    pub fn status(&self) -> Status {
        let st = &self.shared.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Status {
            volume_id: self.volume.id().to_owned(),
            backing_dir: self.volume.backing_dir().display().to_string(),
            mount_point: self.mount_point.display().to_string(),
            kms_key_arn: self.volume.metadata().kms_key_arn.clone(),
            locked: self.is_locked(),
            frozen: self.shared.gate.is_frozen(),
            inodes: self.shared.inode_count(),
            reads: get(&st.reads),
            writes: get(&st.writes),
            bytes_read: get(&st.bytes_read),
            bytes_written: get(&st.bytes_written),
            fsyncs: get(&st.fsyncs),
            refused: get(&st.refused),
            errors: get(&st.errors),
        }
    }

    fn syncfs(&self) {
        if let Ok(dir) = std::fs::File::open(&self.mount_point)
            && let Err(e) = nix::unistd::syncfs(&dir)
        {
            tracing::warn!("syncfs {}: {e}", self.mount_point.display());
        }
    }

    /// True while the FUSE session runs.
    pub fn is_mounted(&self) -> bool {
        self.mounted.load(Ordering::Acquire)
            && self
                .session
                .lock()
                .as_ref()
                .is_some_and(|t| !t.is_finished())
    }

    /// Unmounts cleanly: flushes cached writes, then unmounts. Fails with
    /// [`VolumeError::Busy`] (and stays mounted) while files are open on it.
    pub fn unmount(&self) -> Result<(), VolumeError> {
        if !self.mounted.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.is_locked() {
            self.syncfs();
        }
        match nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {
                return Err(VolumeError::Busy(format!(
                    "{} is in use (open files or a working directory on it)",
                    self.mount_point.display()
                )));
            }
            // Already gone (unmounted from outside).
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(VolumeError::Mount(format!(
                    "unmounting {}: {e}",
                    self.mount_point.display()
                )));
            }
        }
        self.finish(Duration::from_secs(10));
        Ok(())
    }

    /// Unmounts even while in use: locks the volume (so nothing more is served), detaches
    /// the mount and aborts the FUSE connection (processes still using it get ENOTCONN).
    pub fn force_unmount(&self) {
        if !self.mounted.load(Ordering::Acquire) {
            return;
        }
        self.shared.lock();
        let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
        if let Some(conn) = self.connection {
            let abort = format!("/sys/fs/fuse/connections/{conn}/abort");
            if let Err(e) = std::fs::write(&abort, b"1") {
                tracing::debug!("{abort}: {e}");
            }
        }
        self.finish(Duration::from_secs(5));
    }

    /// Waits until the file system is unmounted (by [`Self::unmount`], from another
    /// thread, or from outside with `umount`).
    pub fn wait(&self) {
        loop {
            if self.session.lock().as_ref().is_none_or(|t| t.is_finished()) {
                self.finish(Duration::from_secs(1));
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn finish(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut slot = self.session.lock();
        if slot.is_none() && !self.mounted.load(Ordering::Acquire) {
            return;
        }
        if let Some(thread) = slot.take() {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                if let Ok(Err(e)) = thread.join() {
                    tracing::debug!("FUSE session ended: {e}");
                }
            } else {
                tracing::warn!("the FUSE session did not end in time");
                *slot = Some(thread);
                return;
            }
        }
        self.mounted.store(false, Ordering::Release);
        // The keys go with the file system.
        self.shared.lock();
        tracing::info!(volume = %self.volume.id(), "volume unmounted");
    }
}

impl Drop for MountedVolume {
    fn drop(&mut self) {
        if self.mounted.load(Ordering::Acquire) && self.unmount().is_err() {
            self.force_unmount();
        }
        self.shared.lock();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
