//! The KMS ciphertext blob, format version 1.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x01)
//! 1       16    KMS key id (the key's UUID, raw bytes)
//! 17      4     backing-key version (u32 big-endian, 1 = the key's first material)
//! 21      16    salt (random per ciphertext; input to the per-ciphertext key derivation)
//! 37      12    nonce (random per ciphertext)
//! 49      n     AES-256-GCM ciphertext of the plaintext
//! 49+n    16    AES-256-GCM tag
//! ```
//!
//! The 49-byte header is the cleartext part: Decrypt reads the key id and version from it,
//! so callers need not name the key and rotation is transparent. The whole header and the
//! canonical encryption context are the GCM additional authenticated data, so changing any
//! header byte, or presenting a different context, fails authentication.

use crate::CryptoError;

pub const FORMAT_V1: u8 = 1;
pub const SALT_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 1 + 16 + 4 + SALT_LEN + NONCE_LEN;
/// Bytes a ciphertext adds to its plaintext.
pub const CIPHERTEXT_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The cleartext header of a ciphertext blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiphertextHeader {
    pub key_id: uuid::Uuid,
    pub key_version: u32,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
}

impl CiphertextHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = FORMAT_V1;
        out[1..17].copy_from_slice(self.key_id.as_bytes());
        out[17..21].copy_from_slice(&self.key_version.to_be_bytes());
        out[21..37].copy_from_slice(&self.salt);
        out[37..49].copy_from_slice(&self.nonce);
        out
    }

    /// Reads the header of `blob`. Fails on anything that cannot be a version-1 blob;
    /// the caller reports every failure as the same `InvalidCiphertextException`.
    pub fn decode(blob: &[u8]) -> Result<Self, CryptoError> {
        if blob.len() < CIPHERTEXT_OVERHEAD || blob.first() != Some(&FORMAT_V1) {
            return Err(CryptoError::Authentication);
        }
        let field =
            |range: std::ops::Range<usize>| blob.get(range).ok_or(CryptoError::Authentication);
        let key_id =
            uuid::Uuid::from_slice(field(1..17)?).map_err(|_| CryptoError::Authentication)?;
        let version_bytes: [u8; 4] = field(17..21)?
            .try_into()
            .map_err(|_| CryptoError::Authentication)?;
        let salt: [u8; SALT_LEN] = field(21..37)?
            .try_into()
            .map_err(|_| CryptoError::Authentication)?;
        let nonce: [u8; NONCE_LEN] = field(37..49)?
            .try_into()
            .map_err(|_| CryptoError::Authentication)?;
        Ok(Self {
            key_id,
            key_version: u32::from_be_bytes(version_bytes),
            salt,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = CiphertextHeader {
            key_id: uuid::Uuid::from_u128(0x1234),
            key_version: 7,
            salt: [3; SALT_LEN],
            nonce: [9; NONCE_LEN],
        };
        let mut blob = header.encode().to_vec();
        blob.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(CiphertextHeader::decode(&blob), Ok(header));
    }

    #[test]
    fn rejects_short_or_unknown_versions() {
        assert!(CiphertextHeader::decode(&[]).is_err());
        assert!(CiphertextHeader::decode(&[1; CIPHERTEXT_OVERHEAD - 1]).is_err());
        assert!(CiphertextHeader::decode(&[2; CIPHERTEXT_OVERHEAD]).is_err());
    }
}
