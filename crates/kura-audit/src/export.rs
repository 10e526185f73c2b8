//! `kura audit export`: the trail's records as JSON lines, oldest first.

use std::io::{self, Write};
use std::path::Path;

use serde::Deserialize;

use crate::{chain, segment, staging};

#[derive(Deserialize)]
struct Recipient {
    #[serde(rename = "recipientAccountId", default)]
    account: String,
}

/// Writes every record of the trail in `dir` (only those of `account`, if given) to
/// `out`, one CloudTrail record per line: the segments' records, then those still only in
/// the staging ring that continue the chain (calls answered just before kura stopped
/// without copying them). Returns how many were written. Does not verify the trail
/// (`kura audit verify` does); lines that are not records are skipped.
pub fn export(dir: &Path, account: Option<&str>, out: &mut dyn Write) -> io::Result<u64> {
    let mut export = Export {
        account,
        out,
        written: 0,
        last: (0, chain::GENESIS),
    };
    for (_, path) in segment::list_segments(dir)? {
        export.lines(&std::fs::read(&path)?)?;
    }
    let (seq, head) = export.last;
    export.lines(&staging::recover_lines(dir, seq, head)?)?;
    export.out.flush()?;
    Ok(export.written)
}

struct Export<'a> {
    account: Option<&'a str>,
    out: &'a mut dyn Write,
    written: u64,
    /// Sequence number and chain value of the last record seen.
    last: (u64, [u8; 32]),
}

impl Export<'_> {
    fn lines(&mut self, bytes: &[u8]) -> io::Result<()> {
        for &(start, end) in &segment::scan(bytes).lines {
            let Ok(line) = chain::parse_line(bytes.get(start..end).unwrap_or_default()) else {
                continue;
            };
            self.last = (line.seq, line.hash);
            if let Some(account) = self.account {
                let recipient: Option<Recipient> = serde_json::from_slice(line.record).ok();
                if recipient.is_none_or(|r| r.account != account) {
                    continue;
                }
            }
            self.out.write_all(line.record)?;
            self.out.write_all(b"\n")?;
            self.written += 1;
        }
        Ok(())
    }
}
