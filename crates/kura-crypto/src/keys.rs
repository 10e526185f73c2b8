//! KMS backing keys: the 256-bit material behind each version of a KMS key.

use aws_lc_rs::{aead, hkdf};

use crate::ciphertext::{CiphertextHeader, HEADER_LEN, NONCE_LEN, SALT_LEN, TAG_LEN};
use crate::{CryptoError, EncryptionContext, SecretBytes, fill_random};

/// Label that separates this derivation from any other use of the same material.
const DERIVATION_LABEL: &[u8] = b"kura kms ciphertext v1";
pub const BACKING_KEY_LEN: usize = 32;

/// One version of a KMS key's material, in plaintext, in memory only.
///
/// Never used directly as an AES key: every ciphertext derives its own AES-256-GCM key
/// with HKDF-SHA256 from this material and a fresh random salt, so no (key, nonce) pair
/// can repeat however many ciphertexts one backing key produces.
#[derive(Debug)]
pub struct BackingKey(SecretBytes);

impl BackingKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(crate::random_secret(BACKING_KEY_LEN)?))
    }

    pub fn from_secret(secret: SecretBytes) -> Result<Self, CryptoError> {
        if secret.len() == BACKING_KEY_LEN {
            Ok(Self(secret))
        } else {
            Err(CryptoError::KeyLength)
        }
    }

    pub fn secret(&self) -> &SecretBytes {
        &self.0
    }

    /// Encrypts `plaintext` into a version-1 ciphertext blob for key `key_id` at
    /// `key_version`, binding `context` as authenticated data.
    pub fn encrypt(
        &self,
        key_id: uuid::Uuid,
        key_version: u32,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut salt)?;
        fill_random(&mut nonce)?;
        let header = CiphertextHeader {
            key_id,
            key_version,
            salt,
            nonce,
        };
        let header_bytes = header.encode();
        let aead_key = self.derive(&header)?;

        let mut blob = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(&header_bytes);
        blob.extend_from_slice(plaintext);
        let aad = associated_data(&header_bytes, context);
        let body = blob
            .get_mut(HEADER_LEN..)
            .ok_or(CryptoError::Authentication)?;
        let tag = aead_key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_slice()),
                body,
            )
            .map_err(|_| CryptoError::Authentication)?;
        blob.extend_from_slice(tag.as_ref());
        Ok(blob)
    }

    /// Decrypts a blob whose header was read with [`CiphertextHeader::decode`] and whose
    /// key and version selected this backing key.
    pub fn decrypt(
        &self,
        header: &CiphertextHeader,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes, CryptoError> {
        let header_bytes = blob.get(..HEADER_LEN).ok_or(CryptoError::Authentication)?;
        let body = blob.get(HEADER_LEN..).ok_or(CryptoError::Authentication)?;
        let aead_key = self.derive(header)?;
        let aad = associated_data(header_bytes, context);
        let mut in_out = SecretBytes::copy_from(body);
        let plaintext_len = aead_key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(header.nonce),
                aead::Aad::from(aad.as_slice()),
                in_out.expose_mut(),
            )
            .map_err(|_| CryptoError::Authentication)?
            .len();
        Ok(SecretBytes::copy_from(
            in_out
                .expose()
                .get(..plaintext_len)
                .ok_or(CryptoError::Authentication)?,
        ))
    }

    fn derive(&self, header: &CiphertextHeader) -> Result<aead::LessSafeKey, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(self.0.expose());
        let version = header.key_version.to_be_bytes();
        let info = [
            DERIVATION_LABEL,
            header.key_id.as_bytes().as_slice(),
            version.as_slice(),
        ];
        let okm = prk
            .expand(&info, &aead::AES_256_GCM)
            .map_err(|_| CryptoError::KeyLength)?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
    }
}

fn associated_data(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ciphertext::CIPHERTEXT_OVERHEAD;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn round_trip(
        key: &BackingKey,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, CryptoError> {
        let header = CiphertextHeader::decode(blob)?;
        key.decrypt(&header, blob, context)
            .map(|p| p.expose().to_vec())
    }

    #[test]
    fn encrypts_and_decrypts_with_same_context() {
        let key = BackingKey::generate().unwrap();
        let id = uuid::Uuid::new_v4();
        let context = ctx(&[("aws:rds:db-id", "db-1")]);
        let blob = key.encrypt(id, 3, &context, b"secret").unwrap();
        assert_eq!(blob.len(), 6 + CIPHERTEXT_OVERHEAD);
        let header = CiphertextHeader::decode(&blob).unwrap();
        assert_eq!((header.key_id, header.key_version), (id, 3));
        assert_eq!(round_trip(&key, &blob, &context).unwrap(), b"secret");
    }

    #[test]
    fn context_mismatch_fails() {
        let key = BackingKey::generate().unwrap();
        let blob = key
            .encrypt(uuid::Uuid::new_v4(), 1, &ctx(&[("a", "1")]), b"x")
            .unwrap();
        for wrong in [
            ctx(&[]),
            ctx(&[("a", "2")]),
            ctx(&[("A", "1")]),
            ctx(&[("a", "1"), ("b", "")]),
        ] {
            assert_eq!(
                round_trip(&key, &blob, &wrong),
                Err(CryptoError::Authentication)
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let key = BackingKey::generate().unwrap();
        let context = ctx(&[]);
        let blob = key
            .encrypt(uuid::Uuid::new_v4(), 1, &context, b"hello")
            .unwrap();
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut tampered = blob.clone();
                tampered[i] ^= 1 << bit;
                assert!(
                    round_trip(&key, &tampered, &context).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        assert!(round_trip(&key, &blob[..blob.len() - 1], &context).is_err());
    }

    #[test]
    fn another_key_cannot_decrypt() {
        let key = BackingKey::generate().unwrap();
        let other = BackingKey::generate().unwrap();
        let blob = key
            .encrypt(uuid::Uuid::new_v4(), 1, &ctx(&[]), b"x")
            .unwrap();
        assert!(round_trip(&other, &blob, &ctx(&[])).is_err());
    }

    #[test]
    fn ciphertexts_are_randomized() {
        let key = BackingKey::generate().unwrap();
        let id = uuid::Uuid::new_v4();
        let a = key.encrypt(id, 1, &ctx(&[]), b"same").unwrap();
        let b = key.encrypt(id, 1, &ctx(&[]), b"same").unwrap();
        assert_ne!(a, b);
    }

    proptest::proptest! {
        #[test]
        fn decrypting_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let key = BackingKey::generate().unwrap();
            if let Ok(header) = CiphertextHeader::decode(&bytes) {
                let _ = key.decrypt(&header, &bytes, &EncryptionContext::default());
            }
        }
    }
}
