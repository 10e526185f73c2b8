//! Verification of a trail: the record chain, the digests' signatures, the digest chain,
//! and the agreement between digests and records. Used by `kura audit verify` (the whole
//! trail) and at start-up (the part written since the newest digest).
//!
//! The first break found is reported with its place (file, line, byte offset, sequence
//! number) and what is wrong; verification stops there.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::chain::{self, GENESIS};
use crate::digest::{self, DIGEST_FILE, Digest};
use crate::segment::{self, Scan};

/// Where and what the first break is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `segment-000001.jsonl line 17 (byte 10532, seq 17)`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// The newest digest found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestInfo {
    pub digest_seq: u64,
    pub last_seq: u64,
    pub time: String,
    /// SHA-256 of the digest's bytes (hex): pin this outside the host to detect a later
    /// truncation of the trail and its digests together.
    pub hash: String,
    pub chain_head: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub segments: usize,
    pub records: u64,
    pub last_seq: u64,
    pub digests: u64,
    pub last_digest: Option<DigestInfo>,
    /// Records after the newest digest: protected by the chain, not yet by a signature.
    pub unsigned_records: u64,
    /// Things that are not breaks, such as the remains of a write interrupted by a crash.
    pub warnings: Vec<String>,
    pub problem: Option<Problem>,
}

impl Report {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// A digest as a checkpoint on the record chain.
#[derive(Debug, Clone)]
struct Checkpoint {
    digest_seq: u64,
    chain_head: [u8; 32],
    segment: Option<String>,
    end_offset: Option<u64>,
}

/// The digests file, read and checked.
#[derive(Debug, Default)]
pub(crate) struct DigestLog {
    checkpoints: BTreeMap<u64, Vec<Checkpoint>>,
    pub last: Option<(Digest, DigestInfo, String)>,
    pub count: u64,
    /// Byte length of the complete lines (a torn last line is beyond it).
    pub complete_len: u64,
    pub torn_bytes: u64,
}

/// Reads and checks `digests.jsonl`: signatures, numbering, the digest chain. With
/// `only_last`, checks only the newest digest's signature (start-up).
pub(crate) fn read_digests(
    dir: &Path,
    public_key: &[u8],
    only_last: bool,
) -> Result<DigestLog, Problem> {
    let path = dir.join(DIGEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DigestLog::default()),
        Err(e) => {
            return Err(Problem {
                location: DIGEST_FILE.to_owned(),
                message: format!("cannot be read: {e}"),
            });
        }
    };
    let complete_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut log = DigestLog {
        complete_len: complete_len as u64,
        torn_bytes: (bytes.len() - complete_len) as u64,
        ..DigestLog::default()
    };
    let lines: Vec<&[u8]> = bytes
        .get(..complete_len)
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let fingerprint = kura_crypto::public_key_fingerprint(public_key);
    let mut previous: Option<(Digest, String, String)> = None;
    let total = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        let number = i as u64 + 1;
        let location = format!("{DIGEST_FILE} line {number}");
        let problem = |message: String| Problem {
            location: location.clone(),
            message,
        };
        if only_last && i + 1 < total {
            continue;
        }
        let parsed =
            digest::parse_line(line).map_err(|e| problem(format!("malformed digest: {e}")))?;
        if !digest::signature_valid(public_key, parsed.bytes, &parsed.signature) {
            return Err(problem(format!(
                "the signature does not verify with the trail's key (fingerprint {fingerprint}): the digest was modified or forged"
            )));
        }
        let current: Digest = serde_json::from_slice(parsed.bytes)
            .map_err(|e| problem(format!("malformed digest: {e}")))?;
        let hash = hex::encode(kura_crypto::sha256(parsed.bytes));
        let signature = hex::encode(&parsed.signature);
        if !only_last {
            check_digest_link(&current, number, previous.as_ref()).map_err(problem)?;
        }
        let chain_head = chain::parse_hex32(current.chain_head.as_bytes())
            .ok_or_else(|| problem("chainHead is not 64 hex digits".to_owned()))?;
        log.checkpoints
            .entry(current.last_seq)
            .or_default()
            .push(Checkpoint {
                digest_seq: current.digest_seq,
                chain_head,
                segment: current.segment.clone(),
                end_offset: current.end_offset,
            });
        log.count = number;
        let info = DigestInfo {
            digest_seq: current.digest_seq,
            last_seq: current.last_seq,
            time: current.digest_time.clone(),
            hash: hash.clone(),
            chain_head: current.chain_head.clone(),
        };
        log.last = Some((current.clone(), info, signature.clone()));
        previous = Some((current, hash, signature));
    }
    Ok(log)
}

fn check_digest_link(
    current: &Digest,
    number: u64,
    previous: Option<&(Digest, String, String)>,
) -> Result<(), String> {
    if current.digest_seq != number {
        return Err(format!(
            "digest #{} found where digest #{number} was expected: digests were removed, inserted or reordered",
            current.digest_seq
        ));
    }
    match previous {
        None => {
            if current.previous_digest_hash.is_some() || current.first_seq != 1 {
                return Err(
                    "the first digest refers to an earlier one: the start of the digests file was removed"
                        .to_owned(),
                );
            }
        }
        Some((prev, prev_hash, prev_signature)) => {
            if current.previous_digest_hash.as_deref() != Some(prev_hash.as_str())
                || current.previous_digest_signature.as_deref() != Some(prev_signature.as_str())
            {
                return Err(format!(
                    "previousDigestHash/previousDigestSignature do not match digest #{}: the digest chain is broken",
                    prev.digest_seq
                ));
            }
            if current.first_seq != prev.last_seq + 1 {
                return Err(format!(
                    "firstSeq is {} but the previous digest ended at seq {}",
                    current.first_seq, prev.last_seq
                ));
            }
        }
    }
    if current.last_seq + 1 < current.first_seq {
        return Err(format!(
            "lastSeq {} is before firstSeq {}",
            current.last_seq, current.first_seq
        ));
    }
    Ok(())
}

/// Where a walk starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// From the first record, at the genesis chain value.
    Genesis,
    /// Skip records up to `seq`, whose stored chain value must be `head` (a digest's
    /// chain head), and verify from there.
    Anchor { seq: u64, head: [u8; 32] },
}

/// What a walk over segments learned.
#[derive(Debug, Default)]
pub(crate) struct WalkState {
    pub next_seq: u64,
    pub head: [u8; 32],
    pub records: u64,
    /// For each segment walked: its path, its scan summary (data end, torn tail).
    pub segments: Vec<WalkedSegment>,
    pub warnings: Vec<String>,
    pub problem: Option<Problem>,
    /// Where the newest record ends: (segment name, offset).
    pub last_position: Option<(String, u64)>,
}

#[derive(Debug, Clone)]
pub(crate) struct WalkedSegment {
    pub index: u64,
    pub path: PathBuf,
    pub file_len: u64,
    pub data_end: u64,
    pub tail_end: u64,
}

pub(crate) fn walk(
    segments: &[(u64, PathBuf)],
    start: Start,
    digests: &DigestLog,
) -> io::Result<WalkState> {
    let mut state = WalkState {
        next_seq: 1,
        head: GENESIS,
        ..WalkState::default()
    };
    let mut anchor = match start {
        Start::Genesis => None,
        Start::Anchor { seq: 0, head } => {
            state.head = head;
            None
        }
        Start::Anchor { seq, head } => Some((seq, head)),
    };
    // A torn tail seen in a segment that is followed by data is damage, not a crash.
    let mut pending_torn: Option<Problem> = None;
    for (index, path) in segments {
        let name = segment::segment_name(*index);
        let bytes = std::fs::read(path)?;
        let scan = segment::scan(&bytes);
        state.segments.push(WalkedSegment {
            index: *index,
            path: path.clone(),
            file_len: bytes.len() as u64,
            data_end: scan.data_end as u64,
            tail_end: scan.tail_end as u64,
        });
        if scan.tail_end > 0
            && let Some(problem) = pending_torn.take()
        {
            state.problem = Some(problem);
            return Ok(state);
        }
        if let Some(problem) = walk_segment(&name, &bytes, &scan, &mut state, &mut anchor, digests)
        {
            state.problem = Some(problem);
            return Ok(state);
        }
        if scan.has_torn_tail() {
            let torn = scan.tail_end - scan.data_end;
            let location = format!("{name} byte {}", scan.data_end);
            pending_torn = Some(Problem {
                location: location.clone(),
                message: format!(
                    "{torn} bytes that do not form a complete record are followed by more records: the file was damaged or edited"
                ),
            });
            state.warnings.push(format!(
                "{location}: {torn} bytes after the last complete record, left by a crash before they reached the disk in full (never made durable); kura discards them at start-up"
            ));
        }
    }
    if let Some((seq, _)) = anchor {
        state.problem = Some(Problem {
            location: "trail".to_owned(),
            message: format!(
                "record seq {seq}, the newest one covered by a signed digest, is missing: records were removed"
            ),
        });
    }
    Ok(state)
}

fn walk_segment(
    name: &str,
    bytes: &[u8],
    scan: &Scan,
    state: &mut WalkState,
    anchor: &mut Option<(u64, [u8; 32])>,
    digests: &DigestLog,
) -> Option<Problem> {
    for (number, &(start, end)) in scan.lines.iter().enumerate() {
        let line_number = number + 1;
        let text = bytes.get(start..end).unwrap_or_default();
        let place = |seq: Option<u64>| match seq {
            Some(seq) => format!("{name} line {line_number} (byte {start}, seq {seq})"),
            None => format!("{name} line {line_number} (byte {start})"),
        };
        let line = match chain::parse_line(text) {
            Ok(line) => line,
            Err(e) => {
                return Some(Problem {
                    location: place(None),
                    message: format!("not a trail record ({e}): the line was edited or inserted"),
                });
            }
        };
        if let Some((anchor_seq, anchor_head)) = *anchor {
            if line.seq < anchor_seq {
                continue;
            }
            if line.seq > anchor_seq || line.hash != anchor_head {
                return Some(Problem {
                    location: place(Some(line.seq)),
                    message: format!(
                        "record seq {anchor_seq} does not match the chain head of the newest signed digest: records covered by the digest were changed"
                    ),
                });
            }
            *anchor = None;
            state.next_seq = anchor_seq + 1;
            state.head = anchor_head;
            state.last_position = Some((name.to_owned(), end as u64 + 1));
            continue;
        }
        if line.seq != state.next_seq {
            return Some(Problem {
                location: place(Some(line.seq)),
                message: sequence_message(state.next_seq, line.seq, scan, bytes, number),
            });
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(line.record).is_err() {
            return Some(Problem {
                location: place(Some(line.seq)),
                message: "the record is not valid JSON: it was edited".to_owned(),
            });
        }
        let computed = chain::link(&state.head, line.seq, &chain::record_digest(line.record));
        if computed != line.hash {
            let self_consistent = number > 0
                && scan
                    .lines
                    .get(number - 1)
                    .and_then(|&(s, e)| chain::parse_line(bytes.get(s..e)?).ok())
                    .is_some_and(|prev| {
                        chain::link(&prev.hash, line.seq, &chain::record_digest(line.record))
                            == line.hash
                    });
            let message = if self_consistent {
                format!(
                    "the chain breaks before this record: record seq {} (line {}) was modified and its hash recomputed",
                    line.seq - 1,
                    line_number - 1
                )
            } else {
                "the record does not match its chain hash: it was modified (or forged and inserted with this sequence number)".to_owned()
            };
            return Some(Problem {
                location: place(Some(line.seq)),
                message,
            });
        }
        if let Some(checkpoints) = digests.checkpoints.get(&line.seq) {
            for checkpoint in checkpoints {
                if checkpoint.chain_head != computed {
                    let since = digests
                        .checkpoints
                        .range(..line.seq)
                        .next_back()
                        .map_or(1, |(seq, _)| seq + 1);
                    return Some(Problem {
                        location: place(Some(line.seq)),
                        message: format!(
                            "signed digest #{} says the chain value after seq {} is {}, the records give {}: a record from seq {since} to seq {} was changed, removed, inserted or reordered, and the chain rewritten to hide it",
                            checkpoint.digest_seq,
                            line.seq,
                            chain::to_hex(&checkpoint.chain_head),
                            chain::to_hex(&computed),
                            line.seq,
                        ),
                    });
                }
                if checkpoint.segment.as_deref().is_some_and(|s| s != name)
                    || checkpoint.end_offset.is_some_and(|o| o != end as u64 + 1)
                {
                    return Some(Problem {
                        location: place(Some(line.seq)),
                        message: format!(
                            "signed digest #{} places seq {} in {} ending at byte {}: segment files were moved or edited",
                            checkpoint.digest_seq,
                            line.seq,
                            checkpoint.segment.as_deref().unwrap_or("?"),
                            checkpoint.end_offset.unwrap_or_default()
                        ),
                    });
                }
            }
        }
        state.head = computed;
        state.next_seq = line.seq + 1;
        state.records += 1;
        state.last_position = Some((name.to_owned(), end as u64 + 1));
    }
    None
}

/// Explains a sequence number that is not the expected one.
fn sequence_message(expected: u64, found: u64, scan: &Scan, bytes: &[u8], at: usize) -> String {
    if found < expected {
        return format!(
            "seq {found} found where seq {expected} was expected: a record was inserted, duplicated or moved here"
        );
    }
    let later = scan
        .lines
        .iter()
        .enumerate()
        .skip(at + 1)
        .find_map(|(i, &(s, e))| {
            let line = chain::parse_line(bytes.get(s..e)?).ok()?;
            (line.seq == expected).then_some(i + 1)
        });
    match later {
        Some(line_number) => format!(
            "seq {found} found where seq {expected} was expected, and seq {expected} comes later (line {line_number}): records were reordered"
        ),
        None if found == expected + 1 => {
            format!("seq {expected} is missing (found seq {found}): a record was deleted")
        }
        None => format!(
            "seqs {expected} to {} are missing (found seq {found}): records were deleted",
            found - 1
        ),
    }
}

/// Verifies the whole trail in `dir` with the digests' public key.
pub fn verify_trail(dir: &Path, public_key: &[u8]) -> io::Result<Report> {
    let mut report = Report::default();
    // Digests first: on a live trail every digest read then covers records already on disk.
    let digests = match read_digests(dir, public_key, false) {
        Ok(log) => log,
        Err(problem) => {
            report.problem = Some(problem);
            return Ok(report);
        }
    };
    report.digests = digests.count;
    report.last_digest = digests.last.as_ref().map(|(_, info, _)| info.clone());
    if digests.torn_bytes > 0 {
        report.warnings.push(format!(
            "{DIGEST_FILE} ends with {} bytes of a digest whose write was interrupted; kura discards them at start-up",
            digests.torn_bytes
        ));
    }
    let segments = segment::list_segments(dir)?;
    report.segments = segments.len();
    let state = walk(&segments, Start::Genesis, &digests)?;
    report.records = state.records;
    report.last_seq = state.next_seq.saturating_sub(1);
    report.warnings.extend(state.warnings);
    if let Some(problem) = state.problem {
        report.problem = Some(problem);
        return Ok(report);
    }
    // Records that continue the chain from the staging ring: answered calls not yet
    // copied into a segment (see `staging`).
    let staged = crate::staging::recover_lines(dir, report.last_seq, state.head)?;
    let staged = segment::scan(&staged).lines.len() as u64;
    if staged > 0 {
        report.records += staged;
        report.last_seq += staged;
        report.warnings.push(format!(
            "the newest {staged} records are only in the staging ring ({}): written by calls kura answered, not yet copied into a segment. kura copies them within milliseconds, or at its next start after a crash",
            crate::staging::RING_FILE
        ));
    }
    if let Some((last, _, _)) = &digests.last {
        if last.last_seq > report.last_seq {
            report.problem = Some(Problem {
                location: match &state.last_position {
                    Some((name, offset)) => format!("{name} byte {offset} (end of the trail)"),
                    None => "trail (no records)".to_owned(),
                },
                message: format!(
                    "signed digest #{} covers records up to seq {}, but the trail ends at seq {}: records were removed from the end",
                    last.digest_seq, last.last_seq, report.last_seq
                ),
            });
            return Ok(report);
        }
        report.unsigned_records = report.last_seq - last.last_seq;
    } else {
        report.unsigned_records = report.last_seq;
    }
    Ok(report)
}

/// Reads the sequence number of a segment's first record, if it has one.
pub(crate) fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    Ok(chain::parse_line(&line).ok().map(|l| l.seq))
}
