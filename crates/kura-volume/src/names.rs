//! Encrypted file names on the backing side.
//!
//! A plaintext name is encrypted for its directory (`VolumeCipher::encrypt_name`, keyed by
//! the directory's random id) and written as unpadded base64url, whose alphabet has no `.`:
//! every backing name that starts with `.` is the volume's own bookkeeping.
//!
//! - `.kura-dirid` in every directory: its 16-byte random id;
//! - encrypted names longer than 255 characters (plaintext names over 159 bytes) are stored
//!   as `.kura-long.<base64url(SHA-256(encrypted name))>`, with the full encrypted name in
//!   the sidecar file `.kura-long.<hash>.name`;
//! - `.kura-tmp.*` are directories being created (renamed into place once their id file
//!   is written); a crash can leave one behind, and it is ignored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kura_crypto::volume::{ID_LEN, VolumeCipher};

pub const DIR_ID_FILE: &str = ".kura-dirid";
pub const LONG_PREFIX: &str = ".kura-long.";
pub const LONG_SIDECAR_SUFFIX: &str = ".name";
pub const TMP_PREFIX: &str = ".kura-tmp.";
/// Longest name the volume creates on the backing file system (ext4, xfs: 255).
pub const MAX_BACKING_NAME: usize = 255;
/// Longest plaintext name accepted (what Linux allows).
pub const MAX_NAME: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name too long")]
    TooLong,
    #[error("invalid file name")]
    Invalid,
    #[error("encrypted name could not be authenticated")]
    Authentication,
}

/// Where a plaintext name lives in its backing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingName {
    /// The encrypted name itself.
    Short(String),
    /// A hashed name, with the full encrypted name kept in a sidecar file.
    Long { hashed: String, full: String },
}

impl BackingName {
    /// The directory entry on the backing side.
    pub fn entry(&self) -> &str {
        match self {
            Self::Short(name) => name,
            Self::Long { hashed, .. } => hashed,
        }
    }

    /// The sidecar file holding the full encrypted name, for long names.
    pub fn sidecar(&self) -> Option<String> {
        match self {
            Self::Short(_) => None,
            Self::Long { hashed, .. } => Some(format!("{hashed}{LONG_SIDECAR_SUFFIX}")),
        }
    }

    /// The full encrypted name (what the sidecar contains for long names).
    pub fn full(&self) -> &str {
        match self {
            Self::Short(name) => name,
            Self::Long { full, .. } => full,
        }
    }
}

/// Encrypts `name` for the directory whose id is `dir_id`.
pub fn encode(
    cipher: &VolumeCipher,
    dir_id: &[u8; ID_LEN],
    name: &[u8],
) -> Result<BackingName, NameError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(NameError::Invalid);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    let encrypted = cipher
        .encrypt_name(dir_id, name)
        .map_err(|_| NameError::Authentication)?;
    let full = URL_SAFE_NO_PAD.encode(encrypted);
    if full.len() <= MAX_BACKING_NAME {
        Ok(BackingName::Short(full))
    } else {
        Ok(BackingName::Long {
            hashed: long_name_for(&full),
            full,
        })
    }
}

/// The hashed entry name for a full encrypted name.
pub fn long_name_for(full: &str) -> String {
    format!(
        "{LONG_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(kura_crypto::sha256(full.as_bytes()))
    )
}

/// What a backing directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind<'a> {
    /// An encrypted name, to decrypt with [`decode`].
    Encrypted(&'a str),
    /// A hashed long name; its full encrypted name is in `<entry>.name`.
    Long(&'a str),
    /// The volume's own bookkeeping (dir id, sidecars, temporary entries, `.`, `..`).
    Internal,
}

pub fn classify(entry: &str) -> EntryKind<'_> {
    if let Some(rest) = entry.strip_prefix(LONG_PREFIX) {
        if rest.ends_with(LONG_SIDECAR_SUFFIX) || rest.is_empty() {
            EntryKind::Internal
        } else {
            EntryKind::Long(entry)
        }
    } else if entry.starts_with('.') || entry.is_empty() {
        EntryKind::Internal
    } else {
        EntryKind::Encrypted(entry)
    }
}

/// Decrypts a full encrypted name (an entry, or a long name's sidecar contents).
pub fn decode(
    cipher: &VolumeCipher,
    dir_id: &[u8; ID_LEN],
    full: &str,
) -> Result<Vec<u8>, NameError> {
    let encrypted = URL_SAFE_NO_PAD
        .decode(full.trim_end())
        .map_err(|_| NameError::Authentication)?;
    let name = cipher
        .decrypt_name(dir_id, &encrypted)
        .map_err(|_| NameError::Authentication)?;
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(NameError::Authentication);
    }
    Ok(name)
}

/// Checks that a long name's sidecar belongs to its entry.
pub fn sidecar_matches(entry: &str, full: &str) -> bool {
    long_name_for(full.trim_end()) == entry
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use kura_crypto::SecretBytes;

    fn cipher() -> VolumeCipher {
        VolumeCipher::new(&SecretBytes::copy_from(&[5u8; 32])).unwrap()
    }

    #[test]
    fn short_names_round_trip_and_never_start_with_a_dot() {
        let c = cipher();
        let dir = [1u8; 16];
        for name in [
            &b"a"[..],
            b".hidden",
            b"..x",
            b"PG_VERSION",
            "名前".as_bytes(),
            &[b'x'; 159],
        ] {
            let encoded = encode(&c, &dir, name).unwrap();
            let BackingName::Short(entry) = &encoded else {
                panic!("expected short")
            };
            assert!(entry.len() <= MAX_BACKING_NAME);
            assert!(!entry.starts_with('.'));
            assert_eq!(classify(entry), EntryKind::Encrypted(entry));
            assert_eq!(decode(&c, &dir, entry).unwrap(), name);
            // plaintext never shows through
            assert!(!entry.contains("PG_VERSION"));
        }
    }

    #[test]
    fn long_names_use_a_hash_and_a_sidecar() {
        let c = cipher();
        let dir = [2u8; 16];
        for len in [160, 200, 255] {
            let name = vec![b'L'; len];
            let encoded = encode(&c, &dir, &name).unwrap();
            let BackingName::Long { hashed, full } = &encoded else {
                panic!("expected long for {len}")
            };
            assert!(hashed.len() <= MAX_BACKING_NAME);
            assert_eq!(classify(hashed), EntryKind::Long(hashed));
            let sidecar = encoded.sidecar().unwrap();
            assert_eq!(classify(&sidecar), EntryKind::Internal);
            assert!(sidecar_matches(hashed, full));
            assert!(!sidecar_matches(hashed, "other"));
            assert_eq!(decode(&c, &dir, full).unwrap(), name);
        }
        assert_eq!(encode(&c, &dir, &[b'x'; 256]), Err(NameError::TooLong));
    }

    #[test]
    fn invalid_names_and_tampering_are_refused() {
        let c = cipher();
        let dir = [3u8; 16];
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(encode(&c, &dir, bad), Err(NameError::Invalid));
        }
        let entry = encode(&c, &dir, b"file").unwrap();
        // another directory's id does not decrypt it (a name moved between directories)
        assert_eq!(
            decode(&c, &[4u8; 16], entry.entry()),
            Err(NameError::Authentication)
        );
        let mut tampered = entry.entry().to_owned();
        let last = if tampered.ends_with('A') { "B" } else { "A" };
        tampered.replace_range(tampered.len() - 1.., last);
        assert!(decode(&c, &dir, &tampered).is_err());
        assert_eq!(classify(DIR_ID_FILE), EntryKind::Internal);
        assert_eq!(classify(".kura-tmp.abc"), EntryKind::Internal);
        assert_eq!(classify("."), EntryKind::Internal);
    }
}
