//! The on-disk layout of one encrypted file (pure arithmetic, no I/O).
//!
//! ```text
//! offset 0   2 bytes  format version (u16 BE, 1)
//!        2  16 bytes  file id (random, fixed for the life of the file's contents)
//!       18            block 0: nonce (12) ‖ ciphertext (≤ 4096) ‖ tag (16)
//!  18+4124            block 1 ...
//! ```
//!
//! Every block but the last holds exactly 4096 plaintext bytes (4124 stored); the last
//! holds 1..=4096. An empty file has no header at all (0 bytes): the header is written with
//! the first byte of contents, and dropped again by a truncate to 0. A stored block that
//! is all zero bytes is a hole and reads as zeros (sparse files, and extension by
//! `ftruncate`, need no encryption work).

use kura_crypto::volume::{BLOCK_OVERHEAD, BLOCK_SIZE, ID_LEN, STORED_BLOCK_SIZE};

/// Current format version, first two bytes of every non-empty file.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: u64 = 2 + ID_LEN as u64;
/// Plaintext bytes per block.
pub const BLOCK: u64 = BLOCK_SIZE as u64;
/// Stored bytes per full block.
pub const STORED: u64 = STORED_BLOCK_SIZE as u64;
/// Stored bytes per block beyond its plaintext.
pub const OVERHEAD: u64 = BLOCK_OVERHEAD as u64;

/// A backing file whose layout cannot be valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt encrypted file layout")]
pub struct Corrupt;

/// The header at the start of every non-empty file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub id: [u8; ID_LEN],
}

impl FileHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[2..].copy_from_slice(&self.id);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Corrupt> {
        let version = bytes.get(..2).ok_or(Corrupt)?;
        if version != FORMAT_VERSION.to_be_bytes() {
            return Err(Corrupt);
        }
        let id = bytes
            .get(2..HEADER_LEN as usize)
            .and_then(|b| <[u8; ID_LEN]>::try_from(b).ok())
            .ok_or(Corrupt)?;
        Ok(Self { id })
    }
}

/// Plaintext size of a file whose backing file is `backing` bytes long.
pub fn plaintext_size(backing: u64) -> Result<u64, Corrupt> {
    if backing == 0 {
        return Ok(0);
    }
    let body = backing.checked_sub(HEADER_LEN).ok_or(Corrupt)?;
    let full = body / STORED;
    let rem = body % STORED;
    if rem == 0 {
        Ok(full * BLOCK)
    } else if rem <= OVERHEAD {
        Err(Corrupt)
    } else {
        Ok(full * BLOCK + rem - OVERHEAD)
    }
}

/// Backing size of a file of `plain` plaintext bytes (0 for an empty file, which has no
/// header).
pub fn backing_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let full = plain / BLOCK;
    let rem = plain % BLOCK;
    HEADER_LEN + full * STORED + if rem == 0 { 0 } else { rem + OVERHEAD }
}

/// Backing offset of block `block`.
pub fn block_offset(block: u64) -> u64 {
    HEADER_LEN + block * STORED
}

/// Plaintext length of block `block` in a file of `size` plaintext bytes (0 past the end).
pub fn block_len(size: u64, block: u64) -> u64 {
    let start = block * BLOCK;
    if start >= size {
        0
    } else {
        (size - start).min(BLOCK)
    }
}

/// True if every byte is zero: a stored block that is a hole (examined only after a block
/// failed authentication, so never on the file system's hot path), or plaintext that a
/// copy leaves as a hole.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for plain in [
            0,
            1,
            100,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            10 * BLOCK + 7,
            1 << 30,
            (1 << 40) + 3,
        ] {
            let backing = backing_size(plain);
            assert_eq!(plaintext_size(backing), Ok(plain), "plain {plain}");
        }
        assert_eq!(backing_size(1), HEADER_LEN + 1 + OVERHEAD);
        assert_eq!(backing_size(BLOCK), HEADER_LEN + STORED);
        // a header alone is an empty file (after a crash between header and first block)
        assert_eq!(plaintext_size(HEADER_LEN), Ok(0));
    }

    #[test]
    fn impossible_backing_sizes_are_corrupt() {
        for backing in [1, HEADER_LEN - 1, HEADER_LEN + 1, HEADER_LEN + OVERHEAD] {
            assert_eq!(plaintext_size(backing), Err(Corrupt), "backing {backing}");
        }
        assert_eq!(plaintext_size(HEADER_LEN + STORED + OVERHEAD), Err(Corrupt));
        assert_eq!(
            plaintext_size(HEADER_LEN + STORED + OVERHEAD + 1),
            Ok(BLOCK + 1)
        );
    }

    #[test]
    fn header_round_trip() {
        let h = FileHeader { id: [9u8; 16] };
        assert_eq!(FileHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[1] = 2;
        assert_eq!(FileHeader::decode(&bad), Err(Corrupt));
        assert_eq!(FileHeader::decode(&h.encode()[..10]), Err(Corrupt));
    }

    #[test]
    fn block_geometry() {
        assert_eq!(block_offset(0), HEADER_LEN);
        assert_eq!(block_offset(2), HEADER_LEN + 2 * STORED);
        assert_eq!(block_len(BLOCK + 10, 0), BLOCK);
        assert_eq!(block_len(BLOCK + 10, 1), 10);
        assert_eq!(block_len(BLOCK + 10, 2), 0);
        assert!(is_zero(&[0u8; 4124]));
        let mut b = [0u8; 4124];
        b[4123] = 1;
        assert!(!is_zero(&b));
        b[4123] = 0;
        b[3] = 1;
        assert!(!is_zero(&b));
    }
}
