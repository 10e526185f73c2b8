//! Verifies an audit trail made of arbitrary bytes: the input, split at its first NUL,
//! is written as a segment and as the digest log, and `kura audit verify`'s code reads
//! them. Any panic or hang is a bug in kura-audit; a trail it cannot make sense of must
//! be reported as broken.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kura_audit::{chain, digest, segment, verify};
use libfuzzer_sys::fuzz_target;

fn trail_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kura-fuzz-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (records, digests) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    for line in records.split(|b| *b == b'\n') {
        let _ = chain::parse_line(line);
    }
    for line in digests.split(|b| *b == b'\n') {
        let _ = digest::parse_line(line);
    }
    let dir = trail_dir();
    if std::fs::write(dir.join(segment::segment_name(1)), records).is_err()
        || std::fs::write(dir.join(digest::DIGEST_FILE), digests).is_err()
    {
        return;
    }
    let _ = verify::verify_trail(dir, &[9u8; 32]);
});
