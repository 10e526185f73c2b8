//! Signed digests: periodic checkpoints of the chain, modelled on CloudTrail's digest files.
//!
//! `DATA_DIR/audit/digests.jsonl` holds one digest per line:
//!
//! ```text
//! {"digest":{…},"signature":"<128 hex: Ed25519 signature>"}\n
//! ```
//!
//! The signature covers `kura-audit-digest-v1\n` followed by the exact bytes of the
//! `digest` object. Each digest names the chain head it covers (`lastSeq`, `chainHead`) and
//! the previous digest (`previousDigestHash` = SHA-256 of its bytes, and its signature),
//! so digests form a chain of their own: removing, editing or reordering a digest breaks
//! it, and a record covered by a digest cannot change without the digest failing.

use serde::{Deserialize, Serialize};

use kura_crypto::SigningKey;

pub const DIGEST_FILE: &str = "digests.jsonl";
pub const SIGNATURE_ALGORITHM: &str = "Ed25519";
const SIGNING_PREFIX: &[u8] = b"kura-audit-digest-v1\n";
const PREFIX: &[u8] = b"{\"digest\":";
const SIGNATURE_MEMBER: &[u8] = b",\"signature\":\"";
const SIGNATURE_HEX_LEN: usize = 128;

/// Why a digest was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The digest interval passed with new records.
    Interval,
    /// The record-count limit was reached.
    Records,
    /// No records for a long time: a signed "nothing happened".
    Heartbeat,
    /// The server started.
    Startup,
    /// The server stopped cleanly.
    Shutdown,
    /// Asked for explicitly.
    Requested,
}

/// One digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Digest {
    pub version: u32,
    /// 1 for the first digest of the trail, then +1 each.
    pub digest_seq: u64,
    /// When it was written (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub digest_time: String,
    pub reason: Reason,
    /// The first record this digest adds (the previous digest's `lastSeq` + 1).
    pub first_seq: u64,
    /// The newest record covered; equal to `firstSeq - 1` when the digest adds none.
    pub last_seq: u64,
    /// Chain value after record `lastSeq` (hex).
    pub chain_head: String,
    /// The segment file that holds record `lastSeq`, and the byte offset just after it.
    pub segment: Option<String>,
    pub end_offset: Option<u64>,
    /// `eventTime` range of the records this digest adds.
    pub oldest_event_time: Option<String>,
    pub newest_event_time: Option<String>,
    pub public_key_fingerprint: String,
    pub signature_algorithm: String,
    pub previous_digest_hash: Option<String>,
    pub previous_digest_signature: Option<String>,
}

/// A digest line taken apart (without its newline).
#[derive(Debug, Clone)]
pub struct DigestLine<'a> {
    pub bytes: &'a [u8],
    pub signature: Vec<u8>,
}

/// Signs `digest` and returns its stored line (with newline), its bytes' SHA-256 (hex) and
/// its signature (hex).
pub fn sign_line(
    digest: &Digest,
    key: &SigningKey,
) -> Result<(Vec<u8>, String, String), serde_json::Error> {
    let bytes = serde_json::to_vec(digest)?;
    let signature = key.sign(&signing_input(&bytes));
    let signature_hex = hex::encode(&signature);
    let mut line = Vec::with_capacity(bytes.len() + 160);
    line.extend_from_slice(PREFIX);
    line.extend_from_slice(&bytes);
    line.extend_from_slice(SIGNATURE_MEMBER);
    line.extend_from_slice(signature_hex.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((
        line,
        hex::encode(kura_crypto::sha256(&bytes)),
        signature_hex,
    ))
}

fn signing_input(bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNING_PREFIX.len() + bytes.len());
    input.extend_from_slice(SIGNING_PREFIX);
    input.extend_from_slice(bytes);
    input
}

/// Whether `signature` is the signature of digest `bytes` under `public_key`.
pub fn signature_valid(public_key: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    kura_crypto::verify_ed25519(public_key, &signing_input(bytes), signature)
}

/// Parses a digest line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<DigestLine<'_>, &'static str> {
    let rest = line
        .strip_prefix(PREFIX)
        .ok_or("the line does not start with {\"digest\":")?;
    let rest = rest
        .strip_suffix(b"\"}")
        .ok_or("the line does not end with \"}")?;
    let split = rest
        .len()
        .checked_sub(SIGNATURE_HEX_LEN)
        .ok_or("the line is too short")?;
    let (head, signature_hex) = rest.split_at(split);
    let bytes = head
        .strip_suffix(SIGNATURE_MEMBER)
        .ok_or("the \"signature\" member is missing")?;
    let signature = hex::decode(signature_hex).map_err(|_| "the signature is not hex")?;
    Ok(DigestLine { bytes, signature })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn digest() -> Digest {
        Digest {
            version: 1,
            digest_seq: 1,
            digest_time: "2026-01-01T00:00:00.000Z".into(),
            reason: Reason::Startup,
            first_seq: 1,
            last_seq: 0,
            chain_head: "00".repeat(32),
            segment: None,
            end_offset: None,
            oldest_event_time: None,
            newest_event_time: None,
            public_key_fingerprint: "f".into(),
            signature_algorithm: SIGNATURE_ALGORITHM.into(),
            previous_digest_hash: None,
            previous_digest_signature: None,
        }
    }

    #[test]
    fn lines_round_trip_and_verify() {
        let (key, _) = SigningKey::generate().unwrap();
        let (line, hash, signature) = sign_line(&digest(), &key).unwrap();
        let parsed = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(hex::encode(&parsed.signature), signature);
        assert_eq!(hex::encode(kura_crypto::sha256(parsed.bytes)), hash);
        assert!(signature_valid(
            &key.public_key(),
            parsed.bytes,
            &parsed.signature
        ));
        let back: Digest = serde_json::from_slice(parsed.bytes).unwrap();
        assert_eq!(back, digest());
        let mut forged = parsed.bytes.to_vec();
        forged[10] ^= 1;
        assert!(!signature_valid(
            &key.public_key(),
            &forged,
            &parsed.signature
        ));
        let whole: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(whole["digest"]["reason"], "startup");
        assert!(parse_line(b"{\"digest\":{}}").is_err());
    }
}
