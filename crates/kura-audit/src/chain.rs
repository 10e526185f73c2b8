//! The hash chain and the stored form of one trail entry.
//!
//! Each record is stored as one line of a segment file:
//!
//! ```text
//! {"seq":17,"hash":"<64 hex>","record":<the CloudTrail record, compact JSON>}\n
//! ```
//!
//! `hash` is the chain value after this record:
//!
//! ```text
//! h(0)   = 32 zero bytes
//! h(seq) = SHA-256( h(seq-1) || seq as 8 bytes big-endian || SHA-256(record bytes) )
//! ```
//!
//! where "record bytes" are exactly the bytes between `"record":` and the final `}` of the
//! line. kura writes them in one canonical form (compact JSON, members in a fixed order),
//! and verification hashes the bytes as stored, so any change to a record — even one that
//! leaves its JSON meaning intact — breaks the chain.

use std::fmt;
use std::io::Write as _;

/// The chain value before the first record.
pub const GENESIS: [u8; 32] = [0u8; 32];

const PREFIX: &[u8] = b"{\"seq\":";
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
const RECORD_MEMBER: &[u8] = b"\",\"record\":";

/// SHA-256 of a record's bytes (computed by the request's own task, off the writer).
pub fn record_digest(record: &[u8]) -> [u8; 32] {
    kura_crypto::sha256(record)
}

/// The chain value after record `seq`, given the value before it.
pub fn link(previous: &[u8; 32], seq: u64, record_digest: &[u8; 32]) -> [u8; 32] {
    let mut input = [0u8; 72];
    input[..32].copy_from_slice(previous);
    input[32..40].copy_from_slice(&seq.to_be_bytes());
    input[40..].copy_from_slice(record_digest);
    kura_crypto::sha256(&input)
}

/// Appends the stored line of record `seq` (with its trailing newline) to `out`.
pub fn encode_line(out: &mut Vec<u8>, seq: u64, hash: &[u8; 32], record: &[u8]) {
    out.extend_from_slice(PREFIX);
    // Writing into a Vec cannot fail (and, unlike `to_string`, does not allocate).
    let _ = write!(out, "{seq}");
    out.extend_from_slice(HASH_MEMBER);
    let mut hex = [0u8; 64];
    write_hex(hash, &mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(RECORD_MEMBER);
    out.extend_from_slice(record);
    out.extend_from_slice(b"}\n");
}

/// One stored line, taken apart (without its newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub seq: u64,
    pub hash: [u8; 32],
    pub record: &'a [u8],
}

/// Why a line is not a well-formed trail entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError(pub &'static str);

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Parses a line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, LineError> {
    let rest = line
        .strip_prefix(PREFIX)
        .ok_or(LineError("the line does not start with {\"seq\":"))?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(rest.get(..digits).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(LineError("the sequence number is not a number"))?;
    let rest = rest
        .get(digits..)
        .and_then(|r| r.strip_prefix(HASH_MEMBER))
        .ok_or(LineError("the \"hash\" member is missing"))?;
    let hex = rest
        .get(..64)
        .ok_or(LineError("the \"hash\" member is too short"))?;
    let hash = parse_hex32(hex).ok_or(LineError("the \"hash\" member is not 64 hex digits"))?;
    let rest = rest
        .get(64..)
        .and_then(|r| r.strip_prefix(RECORD_MEMBER))
        .ok_or(LineError("the \"record\" member is missing"))?;
    let record = rest
        .strip_suffix(b"}")
        .ok_or(LineError("the line does not end with }"))?;
    if record.first() != Some(&b'{') || record.last() != Some(&b'}') {
        return Err(LineError("the record is not a JSON object"));
    }
    Ok(Line { seq, hash, record })
}

pub(crate) fn write_hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

pub(crate) fn to_hex(bytes: &[u8; 32]) -> String {
    let mut out = [0u8; 64];
    write_hex(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_hex32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0])?;
        let lo = hex_value(pair[1])?;
        out[i] = (hi << 4) | lo;
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn lines_round_trip() {
        let record = br#"{"eventName":"Encrypt","x":"}"}"#;
        let hash = link(&GENESIS, 1, &record_digest(record));
        let mut out = Vec::new();
        encode_line(&mut out, 1, &hash, record);
        assert_eq!(out.last(), Some(&b'\n'));
        let line = parse_line(&out[..out.len() - 1]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.seq, 1);
        assert_eq!(line.hash, hash);
        assert_eq!(line.record, record);
        let value: serde_json::Value =
            serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
        assert_eq!(value["seq"], 1);
        assert_eq!(value["record"]["eventName"], "Encrypt");
        assert_eq!(value["hash"], to_hex(&hash));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        for bad in [
            &b""[..],
            b"{\"seq\":x",
            b"{\"seq\":1,\"hash\":\"00\",\"record\":{}}",
            b"{\"seq\":1,\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"record\":[]}",
            b"{\"seq\":1,\"hash\":\"000000000000000000000000000000000000000000000000000000000000000G\",\"record\":{}}",
        ] {
            assert!(parse_line(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_link_depends_on_every_input() {
        let d = record_digest(b"{}");
        let base = link(&GENESIS, 1, &d);
        assert_ne!(base, link(&GENESIS, 2, &d));
        assert_ne!(base, link(&[1u8; 32], 1, &d));
        assert_ne!(base, link(&GENESIS, 1, &record_digest(b"{ }")));
    }
}
