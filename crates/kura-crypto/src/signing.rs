//! Ed25519 signatures, for records that must prove who wrote them (the audit trail's
//! digests).
//!
//! The private key is handled only as a PKCS#8 document in [`SecretBytes`]; callers store
//! it wrapped by the root key ([`crate::RootKey::wrap`]). Verification needs only the 32-byte
//! public key.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::{CryptoError, SecretBytes, sha256};

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// An Ed25519 private key. `Debug` shows only the public fingerprint.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(Ed25519, fingerprint {})", self.fingerprint)
    }
}

impl SigningKey {
    /// A new random key and its PKCS#8 encoding (to be wrapped and stored by the caller).
    pub fn generate() -> Result<(Self, SecretBytes), CryptoError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CryptoError::Random)?;
        let pkcs8 = SecretBytes::copy_from(document.as_ref());
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Loads a key from its PKCS#8 encoding.
    pub fn from_pkcs8(pkcs8: &SecretBytes) -> Result<Self, CryptoError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.expose()).map_err(|_| CryptoError::KeyLength)?;
        let fingerprint = public_key_fingerprint(pair.public_key().as_ref());
        Ok(Self { pair, fingerprint })
    }

    /// Signs `message`; the signature is 64 bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// A short public identifier of the key (see [`public_key_fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Whether `signature` is a valid Ed25519 signature of `message` under `public_key`.
pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == PUBLIC_KEY_LEN
        && signature.len() == SIGNATURE_LEN
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
}

/// The first 16 bytes of SHA-256 of the public key, as 32 hex digits (the length of
/// CloudTrail's digest public key fingerprints).
pub fn public_key_fingerprint(public_key: &[u8]) -> String {
    sha256(public_key)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let signature = key.sign(b"digest");
        assert_eq!(signature.len(), SIGNATURE_LEN);
        let public = key.public_key();
        assert!(verify_ed25519(&public, b"digest", &signature));
        assert!(!verify_ed25519(&public, b"digesT", &signature));
        let mut bad = signature.clone();
        bad[0] ^= 1;
        assert!(!verify_ed25519(&public, b"digest", &bad));
        assert!(!verify_ed25519(&public[..31], b"digest", &signature));
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(again.public_key(), public);
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 32);
        assert!(!format!("{key:?}").contains(&format!("{:?}", pkcs8.expose())));
    }

    #[test]
    fn rejects_garbage_keys() {
        assert!(SigningKey::from_pkcs8(&SecretBytes::copy_from(b"nope")).is_err());
    }
}
