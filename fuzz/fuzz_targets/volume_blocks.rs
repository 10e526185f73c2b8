//! Reads arbitrary bytes as what an encrypted volume keeps on disk: a stored block, an
//! encrypted file name, a symlink target and a journal entry's MAC. All must fail without
//! a panic. Then a block, a name and a link made from the input must open, and must not
//! open once one byte is changed or when read as another block, file or directory.
#![no_main]

use kura_crypto::SecretBytes;
use kura_crypto::volume::{BLOCK_OVERHEAD, BLOCK_SIZE, ID_LEN, VolumeCipher};
use libfuzzer_sys::fuzz_target;

const FILE: [u8; ID_LEN] = [3; ID_LEN];
const OTHER: [u8; ID_LEN] = [4; ID_LEN];

/// `bytes` with the byte at `at` (modulo the length) changed by a non-zero mask.
fn flipped(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    let len = changed.len().max(1);
    if let Some(byte) = changed.get_mut(at % len) {
        *byte ^= mask.max(1);
    }
    changed
}

fuzz_target!(|data: &[u8]| {
    let Ok(cipher) = VolumeCipher::new(&SecretBytes::copy_from(&[5u8; 32])) else {
        return;
    };
    let at = data.first().map_or(0, |b| usize::from(*b) * 13);
    let mask = data.get(1).copied().unwrap_or(1);

    // What an attacker could write to the backing directory.
    let mut out = vec![0u8; data.len().saturating_sub(BLOCK_OVERHEAD)];
    assert!(cipher.open_block(&FILE, 0, data, &mut out).is_err());
    assert!(cipher.decrypt_name(&FILE, data).is_err());
    assert!(cipher.decrypt_link(data).is_err());
    assert!(!cipher.verify_journal_mac(b"entry", data));

    // A block of the input.
    let plaintext = &data[..data.len().min(BLOCK_SIZE)];
    let Ok(mut nonces) = cipher.reserve_nonces(1) else {
        return;
    };
    let mut stored = vec![0u8; plaintext.len() + BLOCK_OVERHEAD];
    if cipher
        .seal_block(&mut nonces, &FILE, 7, plaintext, &mut stored)
        .is_err()
    {
        panic!("sealing a block failed");
    }
    let mut opened = vec![0u8; plaintext.len()];
    assert!(cipher.open_block(&FILE, 7, &stored, &mut opened).is_ok());
    assert_eq!(opened, plaintext);
    assert!(cipher.open_block(&FILE, 8, &stored, &mut opened).is_err());
    assert!(cipher.open_block(&OTHER, 7, &stored, &mut opened).is_err());
    let tampered = flipped(&stored, at, mask);
    assert!(cipher.open_block(&FILE, 7, &tampered, &mut opened).is_err());

    // A name and a link of the input.
    if let Ok(name) = cipher.encrypt_name(&FILE, data) {
        assert_eq!(cipher.decrypt_name(&FILE, &name).ok().as_deref(), Some(data));
        assert!(cipher.decrypt_name(&OTHER, &name).is_err());
        assert!(cipher.decrypt_name(&FILE, &flipped(&name, at, mask)).is_err());
    }
    if let Ok(link) = cipher.encrypt_link(data) {
        assert_eq!(cipher.decrypt_link(&link).ok().as_deref(), Some(data));
        assert!(cipher.decrypt_link(&flipped(&link, at, mask)).is_err());
    }
});
