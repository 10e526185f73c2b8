//! kura's audit trail: every authenticated call, recorded in CloudTrail's event format,
//! durably, in a tamper-evident chain with signed digests; searchable with the CloudTrail
//! `LookupEvents` API and exportable as JSON lines.
//!
//! Owns: the record format ([`record`]), the files under `DATA_DIR/audit/` (segments of
//! chained records, the digests file, the wrapped signing key), the writer thread that
//! group-commits records ([`writer`]), verification ([`verify`]), lookups ([`lookup`]),
//! export ([`export`]) and the CloudTrail service ([`CloudTrail`]).
//!
//! Must not: hold plaintext, ciphertext or secrets in a record (services leave them out
//! and [`record::scrub`] removes any that slip through), or acknowledge a record before
//! it is durable.
//!
//! ```text
//! edge ── AuditSink::record ──► serialize + SHA-256 (request task)
//!                               ──► lock: seq, chain value, place ──► copy into the
//!                                   staging ring (no lock, no system call)
//!                               ──► mutating call: wait for the flush
//!        flusher thread: staged lines into the segment, one fdatasync for everything
//!                        written ──► wake the waiters
//!                        every second: sign a digest of the durable chain head
//! ```
//!
//! Storage layout, chain and digest formats, and what verification can and cannot detect
//! are described in `docs/audit.md`.

pub mod chain;
mod cloudtrail;
pub mod digest;
pub mod export;
mod json;
mod keyfile;
pub mod lookup;
pub mod record;
pub mod segment;
mod staging;
pub mod verify;
mod writer;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use kura_crypto::RootKey;
use kura_edge::{ApiError, AuditEvent, AuditSink, ServiceEvent};
use kura_types::Clock;

pub use cloudtrail::{CloudTrail, IdentityPolicies, identity_policies_fn};
pub use keyfile::KeyFileError;
pub use lookup::{AttributeKey, FoundEvent, FoundResource, LookupPage, LookupQuery};
pub use verify::{Problem, Report};
pub use writer::{Durability, Stats};

use record::Records;
use verify::Start;
use writer::{Completion, Done, LastDigest, Resume, SegmentView, Shared, Writer};

/// Every way opening or using the trail can fail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(
        "the audit trail is damaged at {0}. Run `kura audit verify` for details; to start a new trail, move the audit directory aside (keep it as evidence)"
    )]
    Corrupt(Problem),
    #[error("{0}")]
    Write(String),
    #[error("the audit trail is closed")]
    Closed,
}

/// Where the trail lives and how often it signs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The trail's directory, normally `DATA_DIR/audit`.
    pub dir: PathBuf,
    /// Size of a segment file (each is zero-filled at this size before use).
    pub segment_bytes: u64,
    /// Which calls wait for their record to reach stable storage.
    pub durability: Durability,
    /// With [`Durability::Mutating`], how long a read-only call's record may stay written
    /// but not yet flushed to stable storage.
    pub read_only_sync_delay: Duration,
    /// The least time between the starts of two flushes: a longer pause lets more calls
    /// share a flush (fewer flushes, less CPU) at the price of latency. Zero by default.
    pub sync_pacing: Duration,
    /// A digest is signed at most this long after a record was written.
    pub digest_interval: Duration,
    /// … or after this many records, whichever comes first.
    pub digest_max_records: u64,
    /// A digest is signed at least this often even without records.
    pub heartbeat_interval: Duration,
    /// Size of the staging ring (`staging.ring`) calls copy their records into.
    pub staging_bytes: usize,
}

impl AuditConfig {
    /// The defaults for a trail in `dir`: 16 MiB segments, mutating calls durable before
    /// their answer and read-only calls within 5 ms (see [`Durability`]), a digest every
    /// second with records (or every 50,000 records), a heartbeat digest every 15 minutes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 16 << 20,
            durability: Durability::Mutating,
            read_only_sync_delay: Duration::from_millis(5),
            sync_pacing: Duration::ZERO,
            digest_interval: Duration::from_secs(1),
            digest_max_records: 50_000,
            heartbeat_interval: Duration::from_secs(15 * 60),
            staging_bytes: staging::RING_BYTES,
        }
    }
}

/// The audit trail of a running server: the [`AuditSink`] the edge records every call
/// into, and the store LookupEvents reads.
pub struct AuditTrail {
    writer: Writer,
    shared: Arc<Shared>,
    dir: PathBuf,
    public_key: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

impl AuditTrail {
    /// Opens the trail in `config.dir` (creating it on first use), checks and repairs what
    /// a crash may have left (see `docs/audit.md`, "Crash safety"), signs a start-up
    /// digest and starts the writer.
    pub fn open(
        config: AuditConfig,
        root_key: &RootKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuditError> {
        let dir = config.dir.clone();
        segment::ensure_dir(&dir).map_err(io_error(&dir))?;
        let key = keyfile::load_or_create(&dir, root_key)?;
        let public_key = key.public_key();
        let fingerprint = key.fingerprint().to_owned();

        let recovered = recover(&dir, &public_key, &config)?;
        let digests_path = dir.join(digest::DIGEST_FILE);
        let digests_file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&digests_path)
            .map_err(io_error(&digests_path))?;
        segment::sync_dir(&dir).map_err(io_error(&dir))?;

        let shared = Arc::new(Shared::default());
        *shared.segments.write().unwrap_or_else(|p| p.into_inner()) = recovered.views;
        let settings = writer::WriterSettings {
            dir: dir.clone(),
            segment_bytes: config.segment_bytes,
            durability: config.durability,
            read_only_sync_delay: config.read_only_sync_delay,
            sync_pacing: config.sync_pacing,
            digest_interval: config.digest_interval,
            digest_max_records: config.digest_max_records.max(1),
            heartbeat_interval: config.heartbeat_interval,
        };
        let writer = Writer::start(
            settings,
            key,
            clock,
            shared.clone(),
            Resume {
                next_seq: recovered.next_seq,
                head: recovered.head,
                last_position: recovered.last_position,
                last_digest: recovered.last_digest,
                active_index: recovered.active_index,
                active_file: recovered.active_file,
                active_offset: recovered.active_offset,
                ring: recovered.ring,
                digests_file,
            },
        )
        .map_err(AuditError::Write)?;
        Ok(Self {
            writer,
            shared,
            dir,
            public_key,
            fingerprint,
        })
    }

    /// The trail's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Ed25519 public key that verifies the digests.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// A short identifier of [`Self::public_key`].
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Appends the records `fill` writes and waits as the durability policy says. The
    /// records and their lines are built in per-thread buffers, reused from call to call.
    async fn append(
        &self,
        durable: bool,
        fill: impl FnOnce(&mut Records),
    ) -> Result<(), AuditError> {
        let wait = with_scratch(|records, lines| {
            fill(records);
            self.writer
                .append(records, lines, durable, || {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    (Done::Async(tx), rx)
                })
                .map_err(AuditError::Write)
        })?;
        match wait {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(result) => result.map_err(AuditError::Write),
                Err(_) => Err(AuditError::Closed),
            },
        }
    }

    /// Records an event kura made on its own, from synchronous code (e.g. KMS maintenance
    /// in a blocking task). Must not be called on an async runtime thread.
    pub fn record_service_event_blocking(&self, event: &ServiceEvent) -> Result<(), AuditError> {
        let wait = with_scratch(|records, lines| {
            record::service_event_records(event, records);
            self.writer
                .append(records, lines, true, || {
                    let (tx, rx) = mpsc::channel::<Completion>();
                    (Done::Blocking(tx), rx)
                })
                .map_err(AuditError::Write)
        })?;
        match wait.map(|rx| rx.recv()) {
            None => Ok(()),
            Some(Ok(result)) => result.map_err(AuditError::Write),
            Some(Err(_)) => Err(AuditError::Closed),
        }
    }

    async fn control(
        &self,
        send: impl FnOnce(&Writer, Done) -> Result<(), String>,
    ) -> Result<(), AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        send(&self.writer, Done::Async(tx)).map_err(|_| AuditError::Closed)?;
        match rx.await {
            Ok(result) => result.map_err(AuditError::Write),
            Err(_) => Err(AuditError::Closed),
        }
    }

    /// Copies the records of calls answered a moment ago, which may still be only in the
    /// staging ring, into the segments that readers see (blocking file writes).
    pub fn publish(&self) -> Result<(), AuditError> {
        self.writer.publish().map_err(AuditError::Write)
    }

    /// Signs a digest of the current (durable) chain head now.
    pub async fn digest_now(&self) -> Result<(), AuditError> {
        self.control(|writer, done| writer.request_digest(done))
            .await
    }

    /// Finds events for LookupEvents (blocking file reads: call from a blocking task).
    pub fn lookup(&self, query: &LookupQuery) -> Result<LookupPage, AuditError> {
        self.publish()?;
        lookup::lookup(&self.shared.segments(), query).map_err(io_error(&self.dir))
    }

    /// Stops the writer cleanly: a final digest, segments trimmed. Later records fail.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        let result = self
            .control(|writer, done| writer.request_shutdown(done))
            .await;
        self.writer.join();
        result
    }
}

impl Drop for AuditTrail {
    fn drop(&mut self) {
        if self.writer.is_running() {
            let (tx, rx) = mpsc::channel::<Completion>();
            if self.writer.request_shutdown(Done::Blocking(tx)).is_ok() {
                let _ = rx.recv();
            }
            self.writer.join();
        }
    }
}

/// The public key that verifies the digests of the trail in `dir`, unwrapped with the
/// root key (for `kura audit verify`).
pub fn signing_public_key(dir: &Path, root_key: &RootKey) -> Result<Vec<u8>, AuditError> {
    Ok(keyfile::load(dir, root_key)?.public_key())
}

/// Per-thread buffers for building records and their lines.
#[derive(Default)]
struct Scratch {
    records: Records,
    lines: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (or fresh ones if they are in use). `f`
/// must not await: the buffers stay with the thread.
fn with_scratch<T>(f: impl FnOnce(&mut Records, &mut Vec<u8>) -> T) -> T {
    const KEEP: usize = 256 * 1024;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let scratch = &mut *scratch;
            scratch.records.clear();
            let result = f(&mut scratch.records, &mut scratch.lines);
            // Do not keep the memory of an unusually large record.
            if scratch.records.bytes.capacity() > KEEP || scratch.lines.capacity() > KEEP {
                *scratch = Scratch::default();
            }
            result
        }
        Err(_) => {
            let mut scratch = Scratch::default();
            f(&mut scratch.records, &mut scratch.lines)
        }
    })
}

fn refused(error: AuditError) -> ApiError {
    tracing::error!(%error, "audit record refused");
    ApiError::internal("InternalFailure")
}

#[async_trait]
impl AuditSink for AuditTrail {
    async fn record(&self, event: AuditEvent) -> Result<(), ApiError> {
        let mutating = !record::is_read_only(&event);
        self.append(mutating, |records| {
            record::api_call_records(&event, records)
        })
        .await
        .map_err(refused)
    }

    async fn record_service_event(&self, event: ServiceEvent) -> Result<(), ApiError> {
        self.append(true, |records| {
            record::service_event_records(&event, records)
        })
        .await
        .map_err(refused)
    }
}

/// What start-up recovery established.
struct Recovered {
    next_seq: u64,
    head: [u8; 32],
    last_position: Option<(String, u64)>,
    last_digest: Option<LastDigest>,
    views: Vec<SegmentView>,
    active_index: u64,
    active_file: std::fs::File,
    active_offset: u64,
    ring: staging::Ring,
}

/// Start-up: checks the newest digest's signature, verifies the records written since it
/// (the older ones are covered by signed digests; `kura audit verify` checks them all),
/// discards the remains of a write interrupted by a crash, trims finished segments,
/// removes unused spare segments, and creates the segment to write into.
fn recover(dir: &Path, public_key: &[u8], config: &AuditConfig) -> Result<Recovered, AuditError> {
    let digests = verify::read_digests(dir, public_key, true).map_err(AuditError::Corrupt)?;
    if digests.torn_bytes > 0 {
        let path = dir.join(digest::DIGEST_FILE);
        tracing::warn!(
            bytes = digests.torn_bytes,
            "discarding an incomplete digest left by a crash"
        );
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_len(digests.complete_len)?;
                f.sync_all()
            })
            .map_err(io_error(&path))?;
    }
    let anchor = digests
        .last
        .as_ref()
        .and_then(|(d, _, _)| Some((d.last_seq, chain::parse_hex32(d.chain_head.as_bytes())?)));
    let segments = segment::list_segments(dir).map_err(io_error(dir))?;

    // Walk from the segment holding the newest signed record.
    let mut start_at = 0;
    if let Some((anchor_seq, _)) = anchor
        && anchor_seq > 0
    {
        for (i, (_, path)) in segments.iter().enumerate().rev() {
            if verify::first_seq(path)
                .map_err(io_error(path))?
                .is_some_and(|first| first <= anchor_seq)
            {
                start_at = i;
                break;
            }
        }
    }
    let start = match anchor {
        Some((seq, head)) => Start::Anchor { seq, head },
        None => Start::Genesis,
    };
    let to_walk = segments.get(start_at..).unwrap_or_default();
    let state =
        verify::walk(to_walk, start, &verify::DigestLog::default()).map_err(io_error(dir))?;
    if let Some(problem) = state.problem {
        return Err(AuditError::Corrupt(problem));
    }
    for warning in &state.warnings {
        tracing::warn!("{warning}");
    }

    let mut views = Vec::new();
    // Older segments: trim any a crash left untrimmed.
    for (index, path) in segments.get(..start_at).unwrap_or_default() {
        let end = trim_untrimmed(path)?;
        views.push(SegmentView {
            index: *index,
            path: path.clone(),
            end,
        });
    }
    let final_data = state.segments.iter().rposition(|s| s.tail_end > 0);
    let mut removed = false;
    for (i, walked) in state.segments.iter().enumerate() {
        let keep = final_data.is_some_and(|f| i <= f) && walked.data_end > 0;
        if !keep {
            std::fs::remove_file(&walked.path).map_err(io_error(&walked.path))?;
            removed = true;
            continue;
        }
        if walked.file_len != walked.data_end {
            segment::trim(&walked.path, walked.data_end).map_err(io_error(&walked.path))?;
        }
        views.push(SegmentView {
            index: walked.index,
            path: walked.path.clone(),
            end: walked.data_end,
        });
    }
    if removed {
        segment::sync_dir(dir).map_err(io_error(dir))?;
    }
    let active_index = views.last().map_or(1, |v| v.index + 1);
    // Records of calls answered before a crash that had reached only the staging ring
    // continue the chain in the new segment; then the ring starts afresh.
    let staged = staging::recover_lines(dir, state.next_seq - 1, state.head)
        .map_err(io_error(&staging::ring_path(dir)))?;
    let capacity = config.segment_bytes.max(staged.len() as u64);
    let active_file =
        segment::create_preallocated(dir, active_index, capacity).map_err(io_error(dir))?;
    let (mut next_seq, mut head, mut last_position) =
        (state.next_seq, state.head, state.last_position);
    if !staged.is_empty() {
        let path = dir.join(segment::segment_name(active_index));
        active_file
            .write_all_at(&staged, 0)
            .and_then(|()| active_file.sync_data())
            .map_err(io_error(&path))?;
        let scan = segment::scan(&staged);
        for (start, end) in &scan.lines {
            if let Ok(line) = chain::parse_line(staged.get(*start..*end).unwrap_or_default()) {
                next_seq = line.seq + 1;
                head = line.hash;
            }
        }
        last_position = Some((segment::segment_name(active_index), staged.len() as u64));
        tracing::info!(
            records = scan.lines.len(),
            "recovered records of answered calls from the staging ring after a crash"
        );
    }
    let ring = staging::Ring::create(dir, config.staging_bytes).map_err(io_error(dir))?;
    let last_digest = digests
        .last
        .as_ref()
        .map(|(d, info, signature)| LastDigest {
            digest_seq: d.digest_seq,
            last_seq: d.last_seq,
            hash_hex: info.hash.clone(),
            signature_hex: signature.clone(),
        });
    Ok(Recovered {
        next_seq,
        head,
        last_position,
        last_digest,
        views,
        active_index,
        active_file,
        active_offset: staged.len() as u64,
        ring,
    })
}

/// Trims a segment that still has its zero-filled tail; returns its data length.
fn trim_untrimmed(path: &Path) -> Result<u64, AuditError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    let mut last = [0u8; 1];
    if len == 0 {
        return Ok(0);
    }
    file.read_exact_at(&mut last, len - 1)
        .map_err(io_error(path))?;
    if last[0] != 0 {
        return Ok(len);
    }
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let scan = segment::scan(&bytes);
    if scan.has_torn_tail() {
        return Err(AuditError::Corrupt(Problem {
            location: format!("{} byte {}", path.display(), scan.data_end),
            message: "bytes that do not form a record, in a segment followed by others".into(),
        }));
    }
    segment::trim(path, scan.data_end as u64).map_err(io_error(path))?;
    Ok(scan.data_end as u64)
}

#[cfg(test)]
mod tests;
