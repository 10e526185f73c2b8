//! Decrypts arbitrary bytes as a KMS ciphertext blob, then checks that a real blob with
//! any one byte changed, or under another encryption context, never decrypts. Any panic,
//! or a tampered blob that opens, is a bug in kura-crypto.
#![no_main]

use std::collections::BTreeMap;

use kura_crypto::{BackingKey, CiphertextHeader, EncryptionContext, SecretBytes};
use libfuzzer_sys::fuzz_target;

fn context(value: &str) -> EncryptionContext {
    EncryptionContext::new(BTreeMap::from([("aws:rds:db-id".to_owned(), value.to_owned())]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(key) = BackingKey::from_secret(SecretBytes::copy_from(&[7u8; 32])) else {
        return;
    };
    let bound = context("db-1");

    // Arbitrary bytes: an error, never a panic (a forged tag is out of a fuzzer's reach).
    if let Ok(header) = CiphertextHeader::decode(data) {
        assert!(key.decrypt(&header, data, &bound).is_err());
    }

    // A real blob of the input: it opens; changed anywhere, or elsewhere bound, it does not.
    let Ok(blob) = key.encrypt(uuid::Uuid::from_u128(1), 1, &bound, data) else {
        return;
    };
    let Ok(header) = CiphertextHeader::decode(&blob) else {
        panic!("a blob kura wrote does not parse");
    };
    let Ok(plaintext) = key.decrypt(&header, &blob, &bound) else {
        panic!("a blob kura wrote does not decrypt");
    };
    assert_eq!(plaintext.expose(), data);
    assert!(key.decrypt(&header, &blob, &context("db-2")).is_err());
    let position = data.first().map_or(0, |b| usize::from(*b)) * 7 % blob.len();
    let mut tampered = blob.clone();
    if let Some(byte) = tampered.get_mut(position) {
        *byte ^= data.get(1).copied().unwrap_or(1).max(1);
    }
    let opened = CiphertextHeader::decode(&tampered)
        .ok()
        .and_then(|h| key.decrypt(&h, &tampered, &bound).ok());
    assert!(opened.is_none(), "a blob changed at byte {position} decrypted");
});
