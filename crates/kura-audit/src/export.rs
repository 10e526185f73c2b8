//! `kura audit export`: the trail's records as JSON lines, oldest first.

use std::io::{self, Write};
use std::path::Path;

use serde::Deserialize;

use crate::{chain, segment};

#[derive(Deserialize)]
struct Recipient {
    #[serde(rename = "recipientAccountId", default)]
    account: String,
}

/// Writes every record of the trail in `dir` (only those of `account`, if given) to
/// `out`, one CloudTrail record per line. Returns how many were written. Does not verify
/// the trail (`kura audit verify` does); lines that are not records are skipped.
pub fn export(dir: &Path, account: Option<&str>, out: &mut dyn Write) -> io::Result<u64> {
    let mut written = 0;
    for (_, path) in segment::list_segments(dir)? {
        let bytes = std::fs::read(&path)?;
        let scan = segment::scan(&bytes);
        for &(start, end) in &scan.lines {
            let Ok(line) = chain::parse_line(bytes.get(start..end).unwrap_or_default()) else {
                continue;
            };
            if let Some(account) = account {
                let recipient: Option<Recipient> = serde_json::from_slice(line.record).ok();
                if recipient.is_none_or(|r| r.account != account) {
                    continue;
                }
            }
            out.write_all(line.record)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    Ok(written)
}
