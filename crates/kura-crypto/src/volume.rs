//! The cryptography of encrypted volumes (`kura-volume`): file contents in authenticated
//! 4 KiB blocks, file names, symbolic-link targets, and a MAC for the torn-write journal.
//!
//! Layout and threat model: `docs/volume-crypto.md`. In short:
//!
//! - one 256-bit **volume key** (a KMS data key) per volume; it is never used directly:
//!   HKDF-SHA256 derives a separate key for each purpose (contents, names, link targets,
//!   journal MAC, key check);
//! - **contents**: AES-256-GCM per block of at most [`BLOCK_SIZE`] plaintext bytes, stored as
//!   `nonce (12) ‖ ciphertext ‖ tag (16)`; the authenticated data is
//!   `file id (16) ‖ block number (u64 BE)`, so a block cannot be moved to another position
//!   or another file without failing authentication;
//! - **nonces** are never reused under one key: each is `prefix (8 random bytes) ‖ counter
//!   (u32 BE)`; the prefix is drawn from the CSPRNG for every 2^32 nonces and on every
//!   start, so nothing has to be persisted and a crash cannot repeat one;
//! - **names**: AES-256-GCM-SIV (deterministic, misuse resistant) with a fixed nonce and the
//!   directory's random id as authenticated data, over the name padded to a multiple of 16
//!   bytes: equal names in one directory encrypt equally (so lookups need no index), equal
//!   names in different directories do not, and a name moved to another directory fails.

use std::sync::Mutex;

use aws_lc_rs::{aead, hkdf, hmac};

use crate::{CryptoError, SecretBytes, fill_random};

/// Length of a volume key (a KMS `AES_256` data key).
pub const VOLUME_KEY_LEN: usize = 32;
/// Plaintext bytes per content block.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes of nonce stored in front of each block.
pub const BLOCK_NONCE_LEN: usize = 12;
/// Bytes of authentication tag stored after each block.
pub const BLOCK_TAG_LEN: usize = 16;
/// Stored bytes per block beyond its plaintext.
pub const BLOCK_OVERHEAD: usize = BLOCK_NONCE_LEN + BLOCK_TAG_LEN;
/// Stored size of a full block.
pub const STORED_BLOCK_SIZE: usize = BLOCK_SIZE + BLOCK_OVERHEAD;
/// Length of a file's random id (in its header) and of a directory's random id.
pub const ID_LEN: usize = 16;
/// Length of the key check value kept in the volume metadata.
pub const KEY_CHECK_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"kura volume v1";
const LABEL_CONTENTS: &[u8] = b"kura volume v1 contents aes-256-gcm";
const LABEL_NAMES: &[u8] = b"kura volume v1 names aes-256-gcm-siv";
const LABEL_LINKS: &[u8] = b"kura volume v1 symlink targets aes-256-gcm";
const LABEL_JOURNAL: &[u8] = b"kura volume v1 journal hmac-sha256";
const LABEL_KEY_CHECK: &[u8] = b"kura volume v1 key check";
/// Names are padded to a multiple of this many bytes before encryption.
const NAME_PAD: usize = 16;

/// The keys of one unlocked volume, derived from its volume key.
///
/// Holds no copy of the volume key itself. The AEAD key schedules live inside aws-lc,
/// which wipes them when they are freed (dropping this value frees them).
pub struct VolumeCipher {
    contents: aead::LessSafeKey,
    names: aead::LessSafeKey,
    links: aead::LessSafeKey,
    journal: hmac::Key,
    nonces: Mutex<NonceState>,
}

impl std::fmt::Debug for VolumeCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeCipher(<keys redacted>)")
    }
}

struct NonceState {
    prefix: [u8; 8],
    next: u64,
}

/// A reserved run of unique nonces (see [`VolumeCipher::reserve_nonces`]).
#[derive(Debug, Clone, Copy)]
pub struct NonceRun {
    prefix: [u8; 8],
    next: u64,
    end: u64,
}

impl NonceRun {
    fn take(&mut self) -> Result<[u8; BLOCK_NONCE_LEN], CryptoError> {
        if self.next >= self.end {
            return Err(CryptoError::Random);
        }
        let counter = u32::try_from(self.next).map_err(|_| CryptoError::Random)?;
        let mut nonce = [0u8; BLOCK_NONCE_LEN];
        nonce[..8].copy_from_slice(&self.prefix);
        nonce[8..].copy_from_slice(&counter.to_be_bytes());
        self.next += 1;
        Ok(nonce)
    }
}

const COUNTER_LIMIT: u64 = 1 << 32;

impl VolumeCipher {
    /// Derives the volume's keys from its 32-byte volume key.
    pub fn new(volume_key: &SecretBytes) -> Result<Self, CryptoError> {
        let prk = extract(volume_key)?;
        let contents = aead_key(&prk, LABEL_CONTENTS, &aead::AES_256_GCM)?;
        let names = aead_key(&prk, LABEL_NAMES, &aead::AES_256_GCM_SIV)?;
        let links = aead_key(&prk, LABEL_LINKS, &aead::AES_256_GCM)?;
        let journal = hmac::Key::from(
            prk.expand(&[LABEL_JOURNAL], hmac::HMAC_SHA256)
                .map_err(|_| CryptoError::KeyLength)?,
        );
        Ok(Self {
            contents,
            names,
            links,
            journal,
            nonces: Mutex::new(NonceState {
                prefix: random_prefix()?,
                next: 0,
            }),
        })
    }

    /// A value that identifies the volume key without revealing it (an HKDF output under
    /// its own label), stored with the volume so a wrong key is refused at once.
    pub fn key_check(volume_key: &SecretBytes) -> Result<[u8; KEY_CHECK_LEN], CryptoError> {
        let prk = extract(volume_key)?;
        let mut out = [0u8; KEY_CHECK_LEN];
        prk.expand(&[LABEL_KEY_CHECK], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .map_err(|_| CryptoError::KeyLength)?;
        Ok(out)
    }

    /// Reserves `count` consecutive unique nonces for the blocks of one write.
    pub fn reserve_nonces(&self, count: usize) -> Result<NonceRun, CryptoError> {
        let count = u64::try_from(count).map_err(|_| CryptoError::Random)?;
        if count > COUNTER_LIMIT / 2 {
            return Err(CryptoError::Random);
        }
        let mut state = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.next + count > COUNTER_LIMIT {
            state.prefix = random_prefix()?;
            state.next = 0;
        }
        let start = state.next;
        state.next += count;
        Ok(NonceRun {
            prefix: state.prefix,
            next: start,
            end: start + count,
        })
    }

    /// Encrypts one block: `out` receives `nonce ‖ ciphertext ‖ tag` and must be exactly
    /// `plaintext.len() + BLOCK_OVERHEAD` bytes; `plaintext` is at most [`BLOCK_SIZE`].
    pub fn seal_block(
        &self,
        nonces: &mut NonceRun,
        file_id: &[u8; ID_LEN],
        block: u64,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if plaintext.len() > BLOCK_SIZE || out.len() != plaintext.len() + BLOCK_OVERHEAD {
            return Err(CryptoError::Authentication);
        }
        let nonce = nonces.take()?;
        let (nonce_out, rest) = out.split_at_mut(BLOCK_NONCE_LEN);
        let (ciphertext, tag) = rest.split_at_mut(plaintext.len());
        nonce_out.copy_from_slice(&nonce);
        self.contents
            .seal_out_of_place_scatter(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(block_aad(file_id, block)),
                plaintext,
                ciphertext,
                &[],
                tag,
            )
            .map_err(|_| CryptoError::Authentication)
    }

    /// Authenticates and decrypts one stored block into `out`, which must be exactly
    /// `stored.len() - BLOCK_OVERHEAD` bytes. Any change to the block, its position or
    /// its file fails with [`CryptoError::Authentication`].
    pub fn open_block(
        &self,
        file_id: &[u8; ID_LEN],
        block: u64,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if stored.len() < BLOCK_OVERHEAD
            || stored.len() > STORED_BLOCK_SIZE
            || out.len() != stored.len() - BLOCK_OVERHEAD
        {
            return Err(CryptoError::Authentication);
        }
        let (nonce, rest) = stored.split_at(BLOCK_NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - BLOCK_TAG_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CryptoError::Authentication)?;
        self.contents
            .open_separate_gather(
                nonce,
                aead::Aad::from(block_aad(file_id, block)),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| CryptoError::Authentication)
    }

    /// Encrypts a file name for directory `dir_id`: deterministic, so the same name in
    /// the same directory always gives the same bytes (ciphertext ‖ tag).
    pub fn encrypt_name(&self, dir_id: &[u8; ID_LEN], name: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let pad = NAME_PAD - name.len() % NAME_PAD;
        let mut buf = Vec::with_capacity(name.len() + pad + self.names.algorithm().tag_len());
        buf.extend_from_slice(name);
        // PKCS#7: `pad` bytes of value `pad` (1..=16), so unpadding is unambiguous.
        buf.resize(name.len() + pad, u8::try_from(pad).unwrap_or(16));
        self.names
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(dir_id),
                &mut buf,
            )
            .map_err(|_| CryptoError::Authentication)?;
        Ok(buf)
    }

    /// Decrypts a name produced by [`Self::encrypt_name`] for the same directory.
    pub fn decrypt_name(
        &self,
        dir_id: &[u8; ID_LEN],
        encrypted: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut buf = encrypted.to_vec();
        let plain_len = self
            .names
            .open_in_place(
                aead::Nonce::assume_unique_for_key([0u8; 12]),
                aead::Aad::from(dir_id),
                &mut buf,
            )
            .map_err(|_| CryptoError::Authentication)?
            .len();
        buf.truncate(plain_len);
        let pad = usize::from(*buf.last().ok_or(CryptoError::Authentication)?);
        if pad == 0 || pad > NAME_PAD || pad > buf.len() {
            return Err(CryptoError::Authentication);
        }
        let name_len = buf.len() - pad;
        if buf[name_len..].iter().any(|&b| usize::from(b) != pad) {
            return Err(CryptoError::Authentication);
        }
        buf.truncate(name_len);
        Ok(buf)
    }

    /// Encrypts a symbolic link's target: `nonce ‖ ciphertext ‖ tag`.
    pub fn encrypt_link(&self, target: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; BLOCK_NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(target.len() + BLOCK_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(target);
        let body = out
            .get_mut(BLOCK_NONCE_LEN..)
            .ok_or(CryptoError::Authentication)?;
        let tag = self
            .links
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                body,
            )
            .map_err(|_| CryptoError::Authentication)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts a link target produced by [`Self::encrypt_link`].
    pub fn decrypt_link(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if stored.len() < BLOCK_OVERHEAD {
            return Err(CryptoError::Authentication);
        }
        let (nonce, rest) = stored.split_at(BLOCK_NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| CryptoError::Authentication)?;
        let mut buf = rest.to_vec();
        let len = self
            .links
            .open_in_place(nonce, aead::Aad::empty(), &mut buf)
            .map_err(|_| CryptoError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// HMAC-SHA256 of a journal record's header, under the volume's journal key.
    pub fn journal_mac(&self, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.journal, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Verifies a MAC from [`Self::journal_mac`] in constant time.
    pub fn verify_journal_mac(&self, data: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.journal, data, mac).is_ok()
    }
}

fn extract(volume_key: &SecretBytes) -> Result<hkdf::Prk, CryptoError> {
    if volume_key.len() != VOLUME_KEY_LEN {
        return Err(CryptoError::KeyLength);
    }
    Ok(hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(volume_key.expose()))
}

fn aead_key(
    prk: &hkdf::Prk,
    label: &[u8],
    algorithm: &'static aead::Algorithm,
) -> Result<aead::LessSafeKey, CryptoError> {
    let info = [label];
    let okm = prk
        .expand(&info, algorithm)
        .map_err(|_| CryptoError::KeyLength)?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

fn block_aad(file_id: &[u8; ID_LEN], block: u64) -> [u8; ID_LEN + 8] {
    let mut aad = [0u8; ID_LEN + 8];
    aad[..ID_LEN].copy_from_slice(file_id);
    aad[ID_LEN..].copy_from_slice(&block.to_be_bytes());
    aad
}

fn random_prefix() -> Result<[u8; 8], CryptoError> {
    let mut prefix = [0u8; 8];
    fill_random(&mut prefix)?;
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> SecretBytes {
        crate::random_secret(VOLUME_KEY_LEN).unwrap()
    }

    fn seal(c: &VolumeCipher, id: &[u8; 16], block: u64, pt: &[u8]) -> Vec<u8> {
        let mut run = c.reserve_nonces(1).unwrap();
        let mut out = vec![0u8; pt.len() + BLOCK_OVERHEAD];
        c.seal_block(&mut run, id, block, pt, &mut out).unwrap();
        out
    }

    fn open(
        c: &VolumeCipher,
        id: &[u8; 16],
        block: u64,
        stored: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; stored.len().saturating_sub(BLOCK_OVERHEAD)];
        c.open_block(id, block, stored, &mut out).map(|()| out)
    }

    #[test]
    fn block_round_trip_and_binding() {
        let c = VolumeCipher::new(&key()).unwrap();
        let id = [7u8; 16];
        let pt = vec![0xabu8; BLOCK_SIZE];
        let stored = seal(&c, &id, 3, &pt);
        assert_eq!(stored.len(), STORED_BLOCK_SIZE);
        assert_eq!(open(&c, &id, 3, &stored).unwrap(), pt);
        // another position, another file, another key: all refused
        assert!(open(&c, &id, 4, &stored).is_err());
        assert!(open(&c, &[8u8; 16], 3, &stored).is_err());
        let other = VolumeCipher::new(&key()).unwrap();
        assert!(open(&other, &id, 3, &stored).is_err());
        // truncated and flipped
        assert!(open(&c, &id, 3, &stored[..stored.len() - 1]).is_err());
        for i in [0, 11, 12, 100, STORED_BLOCK_SIZE - 1] {
            let mut t = stored.clone();
            t[i] ^= 1;
            assert!(open(&c, &id, 3, &t).is_err(), "byte {i}");
        }
        // short blocks work too
        let short = seal(&c, &id, 0, b"hello");
        assert_eq!(open(&c, &id, 0, &short).unwrap(), b"hello");
        let empty = seal(&c, &id, 0, b"");
        assert_eq!(open(&c, &id, 0, &empty).unwrap(), b"");
    }

    #[test]
    fn nonces_never_repeat_within_a_run_or_across_runs() {
        let c = VolumeCipher::new(&key()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut run = c.reserve_nonces(10).unwrap();
            for _ in 0..10 {
                assert!(seen.insert(run.take().unwrap()));
            }
            assert!(
                run.take().is_err(),
                "a run hands out exactly what was reserved"
            );
        }
    }

    #[test]
    fn names_are_deterministic_per_directory() {
        let c = VolumeCipher::new(&key()).unwrap();
        let d1 = [1u8; 16];
        let d2 = [2u8; 16];
        let a = c.encrypt_name(&d1, b"base").unwrap();
        assert_eq!(a, c.encrypt_name(&d1, b"base").unwrap());
        assert_ne!(a, c.encrypt_name(&d2, b"base").unwrap());
        assert_eq!(c.decrypt_name(&d1, &a).unwrap(), b"base");
        assert!(c.decrypt_name(&d2, &a).is_err());
        // padding hides the exact length: 1..=15 bytes all give 32 bytes
        assert_eq!(c.encrypt_name(&d1, b"x").unwrap().len(), 32);
        assert_eq!(c.encrypt_name(&d1, &[b'y'; 15]).unwrap().len(), 32);
        assert_eq!(c.encrypt_name(&d1, &[b'y'; 16]).unwrap().len(), 48);
        for len in 0..300 {
            let name = vec![b'n'; len];
            let e = c.encrypt_name(&d1, &name).unwrap();
            assert_eq!(c.decrypt_name(&d1, &e).unwrap(), name);
        }
        let mut t = a.clone();
        t[0] ^= 1;
        assert!(c.decrypt_name(&d1, &t).is_err());
    }

    #[test]
    fn links_round_trip_and_key_check_identifies_the_key() {
        let k = key();
        let c = VolumeCipher::new(&k).unwrap();
        let e = c.encrypt_link(b"../target").unwrap();
        assert_eq!(c.decrypt_link(&e).unwrap(), b"../target");
        assert_ne!(e, c.encrypt_link(b"../target").unwrap());
        assert_eq!(
            VolumeCipher::key_check(&k).unwrap(),
            VolumeCipher::key_check(&k.duplicate()).unwrap()
        );
        assert_ne!(
            VolumeCipher::key_check(&k).unwrap(),
            VolumeCipher::key_check(&key()).unwrap()
        );
        assert!(VolumeCipher::new(&SecretBytes::zeroed(16)).is_err());
        let mac = c.journal_mac(b"header");
        assert!(c.verify_journal_mac(b"header", &mac));
        assert!(!c.verify_journal_mac(b"headeR", &mac));
    }
}
