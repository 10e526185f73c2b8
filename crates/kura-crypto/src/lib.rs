//! kura's cryptography, and the only crate that calls the crypto library (aws-lc-rs).
//!
//! Owns: the root key that wraps all key material at rest ([`RootKey`]), KMS backing keys
//! and the versioned KMS ciphertext format ([`BackingKey`], [`ciphertext`]), the canonical
//! encoding of encryption contexts ([`EncryptionContext`]), random numbers, hashes and MACs
//! for the other crates (SigV4 needs HMAC-SHA256), Ed25519 signatures ([`SigningKey`], for
//! the audit trail's digests), and [`SecretBytes`], the type every piece
//! of plaintext key material lives in.
//!
//! Must not: log, print, persist or `Debug`-format plaintext secrets; know about accounts,
//! policies or the store. Callers hand it bytes and get bytes back; where a secret must be
//! written down, it is wrapped by the root key first.
//!
//! The key hierarchy and the ciphertext layout are documented in `docs/crypto.md`.

pub mod ciphertext;
mod context;
mod digest;
mod keys;
mod root;
mod secret;
mod signing;
pub mod volume;

pub use ciphertext::{CIPHERTEXT_OVERHEAD, CiphertextHeader};
pub use context::EncryptionContext;
pub use digest::{constant_time_eq, hmac_sha256, pbkdf2_hmac_sha256, sha256, sha256_hex};
pub use keys::BackingKey;
pub use root::{RootKey, RootKeyError};
pub use secret::SecretBytes;
pub use signing::{
    PUBLIC_KEY_LEN, SIGNATURE_LEN, SigningKey, public_key_fingerprint, verify_ed25519,
};

/// Every way a cryptographic operation can fail. Deliberately coarse: a caller must not be
/// able to learn *why* an authenticated decryption failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The ciphertext is malformed, was tampered with, or the key/context do not match.
    #[error("ciphertext could not be authenticated")]
    Authentication,
    /// The system random number generator failed.
    #[error("random number generator failure")]
    Random,
    /// A key had the wrong length.
    #[error("invalid key length")]
    KeyLength,
}

/// Fills `out` with cryptographically secure random bytes.
pub fn fill_random(out: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Random)
}

/// A fresh random secret of `len` bytes (data keys, GenerateRandom, key material).
pub fn random_secret(len: usize) -> Result<SecretBytes, CryptoError> {
    let mut secret = SecretBytes::zeroed(len);
    fill_random(secret.expose_mut())?;
    Ok(secret)
}

/// `len` random bytes rendered as lowercase hex; for identifiers such as grant ids.
pub fn random_hex(len: usize) -> Result<String, CryptoError> {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
