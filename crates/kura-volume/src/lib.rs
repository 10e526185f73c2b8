//! Encrypted volumes: a FUSE file system that keeps every file of a database encrypted at
//! rest under a volume key, which a KMS key wraps (envelope encryption).
//!
//! Owns: the on-disk format (file header, encrypted 4 KiB blocks, encrypted names — see
//! `docs/volume-crypto.md`), the FUSE file system, lock/unlock, freeze/thaw, the torn-write
//! journal, the control socket, and copying a tree into a volume under another key
//! without mounting ([`copy_into_volume`]). Must not: call the KMS. The caller (the `kura volume`
//! command, the database service) asks the KMS for the volume key and hands the plaintext
//! to [`Volume::mount`]; this crate keeps it only in memory, derives its keys from it and
//! drops them on [`MountedVolume::lock`] and on unmount.
//!
//! ```no_run
//! # fn demo(key: kura_crypto::SecretBytes, wrapped: Vec<u8>) -> Result<(), kura_volume::VolumeError> {
//! use kura_volume::{MountOptions, NewVolume, Volume, new_volume_id};
//! let id = new_volume_id();
//! let new = NewVolume {
//!     volume_id: id.clone(),
//!     kms_key_arn: "arn:aws:kms:us-east-1:000000000000:key/...".into(),
//!     encryption_context: [("kura:volume-id".to_owned(), id)].into(),
//! };
//! let volume = Volume::create("/var/lib/kura/volumes/v1".as_ref(), &wrapped, new)?;
//! let mounted = volume.mount("/mnt/v1".as_ref(), key, MountOptions::default())?;
//! mounted.lock();                 // every operation now fails with EIO
//! // mounted.unlock(key_again)?;  // after the KMS decrypts the wrapped key again
//! {
//!     let _frozen = mounted.freeze(); // writes wait; copy the backing dir now
//! }
//! mounted.unmount()?;
//! # Ok(()) }
//! ```

mod content;
pub mod control;
mod format;
mod fs;
mod journal;
mod meta;
mod mount;
mod names;
mod rekey;
mod sys;

pub use meta::{CipherParams, NewVolume, VolumeMetadata, new_volume_id};
pub use mount::{FreezeGuard, MountOptions, MountedVolume, Status, Volume};
pub use rekey::{CopySource, copy_into_volume};
pub use sys::{check_fuse_available, clear_dead_mount, detach_stale_mount, protect_process_memory};

use std::path::PathBuf;

/// Everything that can go wrong with a volume outside of file operations (those answer
/// errno values to the kernel).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a kura volume (no kura-volume.json)")]
    NotAVolume(PathBuf),
    #[error("volume metadata: {0}")]
    Metadata(String),
    #[error("this key does not belong to the volume (key check mismatch)")]
    WrongKey,
    #[error("the volume key must be 32 bytes")]
    KeyLength,
    #[error("cryptographic failure")]
    Crypto,
    #[error("FUSE is not available: {0}")]
    FuseUnavailable(String),
    #[error("mount: {0}")]
    Mount(String),
    #[error("the volume is busy: {0}")]
    Busy(String),
}

impl VolumeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
