//! Writing the trail: appending records to the chain, group commit, segment rotation,
//! digests.
//!
//! ```text
//! request task ──► serialize + SHA-256 (in parallel, no lock)
//!              ──► lock: reserve seq, chain value, a byte range of the pre-zeroed
//!                  segment and one of the staging ring
//!              ──► memory copy of its line(s) into the ring, no lock held (the page
//!                  cache: from here the record survives kill -9); mark it written
//!              ──► wait until the flusher has made its seq durable (see Durability)
//! flusher thread ──► copy everything staged into the segment (one pwrite per run)
//!                ──► one fdatasync for everything written so far ──► wake every waiter
//!                ──► every second: sign a digest of the durable chain head
//! ```
//!
//! While one `fdatasync` runs the next batch accumulates, so the number of flushes per
//! second is bounded by the disk's flush latency, not by the request rate. Any I/O
//! failure stops the trail for good (until restart): every later call fails rather than
//! succeed unaudited.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kura_crypto::SigningKey;
use kura_types::{Clock, Timestamp};
use smallvec::SmallVec;

use crate::chain;
use crate::digest::{self, Digest, Reason};
use crate::record::Records;
use crate::segment;
use crate::staging::Ring;

/// The largest record accepted (a request body is at most 1 MiB).
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// Bytes a stored line adds around its record.
const LINE_OVERHEAD: usize = 128;

/// When a call's record must be on stable storage before the call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every call waits for the `fdatasync` that covers its record.
    All,
    /// Calls that change something (`readOnly: false`) and events kura makes on its own
    /// wait for the `fdatasync`; read-only calls are answered once their record, and every
    /// record before it, is written to the file (it survives a crash of kura, kill -9
    /// included) and are flushed to stable storage within
    /// [`crate::AuditConfig::read_only_sync_delay`].
    Mutating,
}

/// The outcome of a wait, as its waiter sees it.
pub(crate) type Completion = Result<(), String>;

/// How the flusher tells a waiter it is done.
pub(crate) enum Done {
    Async(tokio::sync::oneshot::Sender<Completion>),
    Blocking(mpsc::Sender<Completion>),
}

impl Done {
    pub(crate) fn complete(self, result: Completion) {
        // A waiter that went away no longer needs the answer.
        match self {
            Self::Async(tx) => {
                let _ = tx.send(result);
            }
            Self::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// A segment as readers (LookupEvents, export) see it: records end at `end`.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub index: u64,
    pub path: PathBuf,
    pub end: u64,
}

/// Counters, for tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records written.
    pub records: AtomicU64,
    /// `fdatasync` calls that made records durable.
    pub syncs: AtomicU64,
    pub digests: AtomicU64,
}

/// State shared between the writer and readers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub segments: RwLock<Vec<SegmentView>>,
    pub stats: Stats,
}

impl Shared {
    pub fn segments(&self) -> Vec<SegmentView> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_end(&self, index: u64, end: u64) {
        let mut segments = self.segments.write().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = segments.iter_mut().rev().find(|v| v.index == index) {
            view.end = end;
        }
    }

    fn push(&self, view: SegmentView) {
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(view);
    }
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub(crate) struct WriterSettings {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub durability: Durability,
    pub read_only_sync_delay: Duration,
    pub sync_pacing: Duration,
    pub digest_interval: Duration,
    pub digest_max_records: u64,
    pub heartbeat_interval: Duration,
}

/// The newest digest written.
#[derive(Debug, Clone)]
pub(crate) struct LastDigest {
    pub digest_seq: u64,
    pub last_seq: u64,
    pub hash_hex: String,
    pub signature_hex: String,
}

/// Where the writer starts (from recovery).
pub(crate) struct Resume {
    pub next_seq: u64,
    pub head: [u8; 32],
    pub last_position: Option<(String, u64)>,
    pub last_digest: Option<LastDigest>,
    /// Index of the new segment to write into (already created, pre-zeroed).
    pub active_index: u64,
    pub active_file: File,
    /// Bytes already in it: records recovered from the staging ring.
    pub active_offset: u64,
    pub ring: Ring,
    pub digests_file: File,
}

struct Active {
    index: u64,
    /// Shared with the chain positions that point into it (cloned on every append).
    name: Arc<str>,
    file: Arc<File>,
    offset: u64,
}

/// A finished segment whose data still has to be synced, then trimmed.
struct Finished {
    index: u64,
    file: Arc<File>,
    path: PathBuf,
    end: u64,
}

/// The chain position after a record: what a digest signs.
#[derive(Clone)]
struct Point {
    seq: u64,
    head: [u8; 32],
    position: Option<(Arc<str>, u64)>,
}

/// Event-time range of records not yet covered by a digest.
#[derive(Default, Clone, Copy)]
struct TimeRange {
    oldest: Option<i64>,
    newest: Option<i64>,
}

impl TimeRange {
    fn add(&mut self, millis: i64) {
        self.oldest = Some(self.oldest.map_or(millis, |t| t.min(millis)));
        self.newest = Some(self.newest.map_or(millis, |t| t.max(millis)));
    }

    fn merge(&mut self, other: TimeRange) {
        if let Some(t) = other.oldest {
            self.add(t);
        }
        if let Some(t) = other.newest {
            self.add(t);
        }
    }
}

/// What the flusher must do besides syncing.
enum Control {
    Digest(Done),
    Shutdown(Done),
}

/// One call's lines: reserved (sequence numbers, chain values, file ranges) under the
/// lock, written outside it.
struct Reservation {
    id: u64,
    /// Chain position after its last record, and where that record ends.
    point: Point,
    /// Index of the first segment it writes into.
    first_segment: u64,
    staged: Staged,
    times: TimeRange,
    done: bool,
}

/// Where one call's lines are in the staging ring and where they go in the segments.
struct Staged {
    /// Ring position of the lines (contiguous in the ring: they never wrap).
    ring_start: u64,
    ring_end: u64,
    /// Nearly always one: a call's lines span two segments only when they fill one.
    chunks: SmallVec<[Chunk; 1]>,
}

/// Everything appends and the flusher share, under one lock.
struct State {
    failed: Option<String>,
    closed: bool,
    /// The chain position after the last reserved record.
    reserved: Point,
    /// The chain position after the last record such that it and every record before it
    /// are written: what the flusher may make durable.
    written: Point,
    inflight: std::collections::VecDeque<Reservation>,
    next_reservation: u64,
    /// Written calls, in order, whose lines are still to be copied from the ring into
    /// the segments.
    staged: std::collections::VecDeque<Staged>,
    /// Ring positions below this one are taken (the next reservation starts here)…
    ring_reserved: u64,
    /// … and below this one they are copied into the segments, free to reuse.
    ring_released: u64,
    active: Active,
    finished: Vec<Finished>,
    /// Waiters for durability: (seq that must be durable, how to answer).
    waiters: Vec<(u64, Done)>,
    /// Calls that need not wait for durability, waiting for a record before theirs that
    /// another call is still writing: (seq that must be written, how to answer).
    ordered: Vec<(u64, Done)>,
    times: TimeRange,
    /// The flusher waits on the condition variable.
    flusher_waiting: bool,
    /// … and has no deadline for data already written: an append must wake it.
    flusher_idle: bool,
    control: Vec<Control>,
    preparer: Preparer,
}

struct Inner {
    settings: WriterSettings,
    shared: Arc<Shared>,
    state: Mutex<State>,
    wake: Condvar,
    ring: Ring,
    /// Held while copying from the ring, so copies (the flusher's, or a call's that
    /// needs ring space) happen one at a time and in order.
    copier: Mutex<()>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing half of an open trail.
pub(crate) struct Writer {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Writes the start-up digest and starts the flusher.
    pub(crate) fn start(
        settings: WriterSettings,
        key: SigningKey,
        clock: Arc<dyn Clock>,
        shared: Arc<Shared>,
        resume: Resume,
    ) -> Result<Self, String> {
        let mut preparer = Preparer::start(settings.dir.clone(), settings.segment_bytes);
        preparer.prepare(resume.active_index + 1);
        let active = Active {
            index: resume.active_index,
            name: segment::segment_name(resume.active_index).into(),
            file: Arc::new(resume.active_file),
            offset: resume.active_offset,
        };
        shared.push(SegmentView {
            index: active.index,
            path: settings.dir.join(&*active.name),
            end: resume.active_offset,
        });
        let durable = Point {
            seq: resume.next_seq - 1,
            head: resume.head,
            position: resume
                .last_position
                .map(|(name, offset)| (Arc::from(name), offset)),
        };
        let inner = Arc::new(Inner {
            settings,
            shared,
            state: Mutex::new(State {
                failed: None,
                closed: false,
                reserved: durable.clone(),
                written: durable.clone(),
                inflight: std::collections::VecDeque::new(),
                next_reservation: 0,
                staged: std::collections::VecDeque::new(),
                ring_reserved: 0,
                ring_released: 0,
                active,
                finished: Vec::new(),
                waiters: Vec::new(),
                ordered: Vec::new(),
                times: TimeRange::default(),
                flusher_waiting: false,
                flusher_idle: false,
                control: Vec::new(),
                preparer,
            }),
            wake: Condvar::new(),
            ring: resume.ring,
            copier: Mutex::new(()),
        });
        let mut flusher = Flusher {
            inner: inner.clone(),
            key,
            clock,
            durable,
            last_sync: Instant::now(),
            digests_file: resume.digests_file,
            last_digest: resume.last_digest,
            last_digest_at: Instant::now(),
            unsigned: 0,
            unsigned_since: None,
            times: TimeRange::default(),
        };
        flusher.write_digest(Reason::Startup)?;
        let handle = std::thread::Builder::new()
            .name("kura-audit-flush".to_owned())
            .spawn(move || flusher.run())
            .map_err(|e| format!("cannot start the audit flusher: {e}"))?;
        Ok(Self {
            inner,
            flusher: Mutex::new(Some(handle)),
        })
    }

    /// Appends one call's records to the chain and writes them to the staging ring. Returns
    /// the receiver to await when the records must be durable before the call is
    /// answered (`durable`, or always with [`Durability::All`]), or, for other calls,
    /// when a record before theirs is still being written by another call.
    pub(crate) fn append<H>(
        &self,
        records: &Records,
        lines: &mut Vec<u8>,
        durable: bool,
        done: impl FnOnce() -> (Done, H),
    ) -> Result<Option<H>, String> {
        let inner = &self.inner;
        let wait = durable || inner.settings.durability == Durability::All;
        let needed = ring_bytes_needed(records);
        if needed > inner.ring.len() / 2 {
            return Err(format!(
                "a call's records of {needed} bytes are larger than the trail accepts"
            ));
        }
        // Under the lock only what must be serial: sequence numbers, chain values, file
        // and ring ranges. The lines are written outside it, so calls do not queue.
        let mut done = Some(done);
        let (id, last_seq, ring_start, handle) = {
            let mut state = self.lock_with_ring_room(needed)?;
            let (id, ring_start) = match reserve(inner, &mut state, records, lines) {
                Ok(reserved) => reserved,
                Err(error) => {
                    fail(&mut state, &error);
                    return Err(error);
                }
            };
            let last_seq = state.reserved.seq;
            let mut handle = None;
            if wait && let Some(make) = done.take() {
                let (waiter, receiver) = make();
                state.waiters.push((last_seq, waiter));
                handle = Some(receiver);
            }
            (id, last_seq, ring_start, handle)
        };
        let written = inner
            .ring
            .write(inner.ring.offset(ring_start), lines)
            .map_err(|e| format!("staging a record: {e}"));
        let mut state = inner.lock();
        if let Err(error) = written {
            fail(&mut state, &error);
            // The waiter registered above is answered by the flusher (with the failure).
            drop(state);
            inner.wake.notify_one();
            return Err(error);
        }
        complete(inner, &mut state, id);
        // A call that does not wait for the flush is answered once every record up to its
        // own is written: a record before it still being written (or whose write failed)
        // would leave a hole, and start-up after a crash cuts the trail at the first hole.
        let handle = match done {
            Some(make) if state.written.seq < last_seq => {
                if let Some(failed) = &state.failed {
                    return Err(failed.clone());
                }
                let (waiter, receiver) = make();
                state.ordered.push((last_seq, waiter));
                Some(receiver)
            }
            _ => handle,
        };
        // Wake the flusher only if it waits, and only if it waits for this: a waiter, or
        // new data when it sleeps without a deadline. (A notify is a syscall.)
        let wake = state.flusher_waiting && (wait || state.flusher_idle);
        if wake {
            state.flusher_waiting = false;
        }
        drop(state);
        if wake {
            inner.wake.notify_one();
        }
        Ok(handle)
    }

    /// The lock, once the ring has room for `needed` more bytes (see [`reserve`]). The
    /// flusher frees the ring every few milliseconds; a call that finds it full (the
    /// flusher stalled on a slow disk) copies the staged lines into the segments itself.
    fn lock_with_ring_room(&self, needed: usize) -> Result<MutexGuard<'_, State>, String> {
        let inner = &self.inner;
        loop {
            let state = inner.lock();
            if let Some(failed) = &state.failed {
                return Err(failed.clone());
            }
            if state.closed {
                return Err("the audit trail is closed".to_owned());
            }
            let (start, _) = ring_place(&inner.ring, state.ring_reserved, needed);
            let room = start + needed as u64 - state.ring_released <= inner.ring.len() as u64;
            if room {
                return Ok(state);
            }
            let nothing_to_copy = state.staged.is_empty();
            drop(state);
            if nothing_to_copy {
                // The space is held by calls still copying their lines in: microseconds.
                std::thread::yield_now();
            } else {
                copy_staged(inner)?;
            }
        }
    }

    /// Copies every staged line into its segment, so readers of the files see it.
    pub(crate) fn publish(&self) -> Result<(), String> {
        copy_staged(&self.inner)
    }

    fn control(&self, make: impl FnOnce(Done) -> Control, done: Done) -> Result<(), String> {
        let mut state = self.inner.lock();
        if state.closed {
            return Err("the audit trail is closed".to_owned());
        }
        let is_shutdown = {
            let control = make(done);
            let shutdown = matches!(control, Control::Shutdown(_));
            state.control.push(control);
            shutdown
        };
        if is_shutdown {
            state.closed = true;
        }
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    pub(crate) fn request_digest(&self, done: Done) -> Result<(), String> {
        self.control(Control::Digest, done)
    }

    pub(crate) fn request_shutdown(&self, done: Done) -> Result<(), String> {
        self.control(Control::Shutdown, done)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn join(&self) {
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn fail(state: &mut State, error: &str) {
    if state.failed.is_none() {
        tracing::error!(%error, "the audit trail cannot write; every call is refused until kura restarts");
        state.failed = Some(format!("the audit trail cannot write: {error}"));
    }
    let failed = state.failed.clone().unwrap_or_default();
    for (_, done) in state.ordered.drain(..) {
        done.complete(Err(failed.clone()));
    }
}

/// Lines (`lines[start..end]`) to write at a place in a segment.
struct Chunk {
    file: Arc<File>,
    /// The segment's index.
    index: u64,
    offset: u64,
    start: usize,
    end: usize,
}

/// An upper bound of the bytes a call's lines take (checked before [`reserve`], which
/// must not fail for want of ring space once it has changed the state).
fn ring_bytes_needed(records: &Records) -> usize {
    records
        .spans
        .iter()
        .map(|span| span.end.saturating_sub(span.start) + LINE_OVERHEAD)
        .sum()
}

/// Where `len` bytes go in the ring if the next free position is `next`: there, or at
/// the start of the next lap if they would wrap (a call's lines stay contiguous).
/// Returns their start and end positions.
fn ring_place(ring: &Ring, next: u64, len: usize) -> (u64, u64) {
    let offset = ring.offset(next);
    let start = if offset + len > ring.len() {
        next + (ring.len() - offset) as u64
    } else {
        next
    };
    (start, start + len as u64)
}

/// Gives each entry its sequence number and chain value, encodes its line, reserves its
/// range in the segment (moving to the next segment when it is full) and the call's
/// range in the staging ring (the caller checked there is room). Returns the
/// reservation's id and ring position.
fn reserve(
    inner: &Inner,
    state: &mut State,
    records: &Records,
    lines: &mut Vec<u8>,
) -> Result<(u64, u64), String> {
    let capacity = inner.settings.segment_bytes;
    let mut chunks = SmallVec::new();
    let first_segment = state.active.index;
    let mut point = state.reserved.clone();
    let mut times = TimeRange::default();
    lines.clear();
    let mut chunk_start = 0;
    for span in &records.spans {
        let record = records.get(span);
        let line_len = record.len() + LINE_OVERHEAD;
        if record.len() > MAX_RECORD_BYTES || line_len as u64 > capacity {
            return Err(format!(
                "a record of {} bytes is larger than the trail accepts",
                record.len()
            ));
        }
        if state.active.offset + (lines.len() - chunk_start + line_len) as u64 > capacity {
            if lines.len() > chunk_start {
                chunks.push(take_chunk(state, chunk_start, lines.len()));
                chunk_start = lines.len();
            }
            rotate(inner, state)?;
        }
        point.seq += 1;
        point.head = chain::link(&point.head, point.seq, &span.digest);
        chain::encode_line(lines, point.seq, &point.head, record);
        times.add(span.time_millis);
    }
    if lines.len() > chunk_start {
        chunks.push(take_chunk(state, chunk_start, lines.len()));
    }
    point.position = Some((state.active.name.clone(), state.active.offset));
    state.reserved = point.clone();
    let (ring_start, ring_end) = ring_place(&inner.ring, state.ring_reserved, lines.len());
    state.ring_reserved = ring_end;
    let id = state.next_reservation;
    state.next_reservation += 1;
    state.inflight.push_back(Reservation {
        id,
        point,
        first_segment,
        staged: Staged {
            ring_start,
            ring_end,
            chunks,
        },
        times,
        done: false,
    });
    Ok((id, ring_start))
}

/// Reserves `lines[start..end]` at the end of the active segment.
fn take_chunk(state: &mut State, start: usize, end: usize) -> Chunk {
    let active = &mut state.active;
    let chunk = Chunk {
        file: active.file.clone(),
        index: active.index,
        offset: active.offset,
        start,
        end,
    };
    active.offset += (end - start) as u64;
    chunk
}

/// Marks reservation `id` written and advances the written position over every leading
/// reservation that is written.
fn complete(inner: &Inner, state: &mut State, id: u64) {
    if let Some(reservation) = state.inflight.iter_mut().find(|r| r.id == id) {
        reservation.done = true;
    }
    while state.inflight.front().is_some_and(|r| r.done) {
        let Some(reservation) = state.inflight.pop_front() else {
            break;
        };
        state.staged.push_back(reservation.staged);
        state.times.merge(reservation.times);
        state.written = reservation.point;
    }
    if !state.ordered.is_empty() {
        let written = state.written.seq;
        let (ready, later) = std::mem::take(&mut state.ordered)
            .into_iter()
            .partition(|(seq, _)| *seq <= written);
        state.ordered = later;
        for (_, done) in ready {
            done.complete(Ok(()));
        }
    }
    inner
        .shared
        .stats
        .records
        .store(state.written.seq, Ordering::Relaxed);
}

/// Copies the staged lines of written calls from the ring into their segments (one
/// `pwrite` per run of consecutive bytes), moves the segments' ends for readers and
/// frees the ring space. A failed copy fails the trail: the lines it took are gone from
/// the queue, and their ring space must never be given out again.
fn copy_staged(inner: &Inner) -> Result<(), String> {
    let _turn = inner.copier.lock().unwrap_or_else(|p| p.into_inner());
    let jobs: Vec<Staged> = inner.lock().staged.drain(..).collect();
    let copied = copy_jobs(inner, &jobs);
    let mut state = inner.lock();
    if let Err(error) = &copied {
        fail(&mut state, error);
        return copied;
    }
    // Readers need only the last end in each segment.
    let mut moved: Option<(u64, u64)> = None;
    for chunk in jobs.iter().flat_map(|job| &job.chunks) {
        let end = chunk.offset + (chunk.end - chunk.start) as u64;
        match &mut moved {
            Some((index, last)) if *index == chunk.index => *last = end,
            _ => {
                if let Some((index, last)) = moved {
                    inner.shared.set_end(index, last);
                }
                moved = Some((chunk.index, end));
            }
        }
    }
    if let Some((index, last)) = moved {
        inner.shared.set_end(index, last);
    }
    if let Some(last) = jobs.last() {
        state.ring_released = state.ring_released.max(last.ring_end);
    }
    Ok(())
}

/// Writes the lines of `jobs` into their segments, merging adjacent pieces.
fn copy_jobs(inner: &Inner, jobs: &[Staged]) -> Result<(), String> {
    let mut run: Option<(&Chunk, u64, usize)> = None;
    let pieces = jobs.iter().flat_map(|job| {
        job.chunks
            .iter()
            .map(move |chunk| (chunk, job.ring_start + chunk.start as u64))
    });
    for (chunk, ring_pos) in pieces {
        let len = chunk.end - chunk.start;
        if let Some((first, first_pos, run_len)) = &mut run {
            let continues = Arc::ptr_eq(&first.file, &chunk.file)
                && first.offset + *run_len as u64 == chunk.offset
                && *first_pos + *run_len as u64 == ring_pos
                && inner.ring.offset(*first_pos) + *run_len + len <= inner.ring.len();
            if continues {
                *run_len += len;
                continue;
            }
            copy_run(inner, first, *first_pos, *run_len)?;
        }
        run = Some((chunk, ring_pos, len));
    }
    match run {
        Some((first, first_pos, run_len)) => copy_run(inner, first, first_pos, run_len),
        None => Ok(()),
    }
}

/// Writes `len` ring bytes from `ring_pos` into `chunk`'s segment at its offset.
fn copy_run(inner: &Inner, chunk: &Chunk, ring_pos: u64, len: usize) -> Result<(), String> {
    inner
        .ring
        .read(inner.ring.offset(ring_pos), len, |bytes| {
            segment::write_page_padded(
                &chunk.file,
                bytes,
                chunk.offset,
                inner.settings.segment_bytes,
            )
        })
        .and_then(|written| written)
        .map_err(|e| format!("writing {}: {e}", segment::segment_name(chunk.index)))
}

/// Moves to the next (pre-zeroed) segment; the flusher syncs and trims the old one.
fn rotate(inner: &Inner, state: &mut State) -> Result<(), String> {
    let index = state.active.index + 1;
    let file = state.preparer.take(index)?;
    let name = segment::segment_name(index);
    let old = std::mem::replace(
        &mut state.active,
        Active {
            index,
            name: name.as_str().into(),
            file: Arc::new(file),
            offset: 0,
        },
    );
    state.finished.push(Finished {
        index: old.index,
        file: old.file,
        path: inner.settings.dir.join(&*old.name),
        end: old.offset,
    });
    state.preparer.prepare(index + 1);
    inner.shared.push(SegmentView {
        index,
        path: inner.settings.dir.join(name),
        end: 0,
    });
    Ok(())
}

/// The flusher thread: syncs, answers waiters, signs digests.
struct Flusher {
    inner: Arc<Inner>,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    durable: Point,
    /// When the last data flush started (for `sync_pacing`).
    last_sync: Instant,
    digests_file: File,
    last_digest: Option<LastDigest>,
    last_digest_at: Instant,
    /// Durable records not yet covered by a digest, since when, and their time range.
    unsigned: u64,
    unsigned_since: Option<Instant>,
    times: TimeRange,
}

/// One round of work, taken from the shared state under the lock.
struct Round {
    target: Point,
    finished: Vec<Finished>,
    /// Finished segments that still receive writes: synced, not yet sealed.
    unsealed: Vec<Arc<File>>,
    active: Arc<File>,
    waiters: Vec<(u64, Done)>,
    times: TimeRange,
    control: Vec<Control>,
    failed: Option<String>,
}

impl Flusher {
    fn run(mut self) {
        loop {
            let round = self.next_round();
            if self.work(round) {
                return;
            }
        }
    }

    /// Waits until there is something to do, then takes it.
    fn next_round(&mut self) -> Round {
        let inner = self.inner.clone();
        let settings = &inner.settings;
        let mut state = inner.lock();
        let mut pending_since: Option<Instant> = None;
        loop {
            // Before the last round, let writes already reserved finish (microseconds;
            // no new ones start once the trail is closed).
            if state.closed && !state.inflight.is_empty() && state.failed.is_none() {
                drop(state);
                std::thread::sleep(Duration::from_millis(1));
                state = inner.lock();
                continue;
            }
            let busy_from = state.inflight.front().map_or(u64::MAX, |r| r.first_segment);
            let pending = state.written.seq > self.durable.seq
                || state.finished.iter().any(|f| f.index < busy_from);
            let now = Instant::now();
            if pending {
                pending_since.get_or_insert(now);
            }
            let sync_due = pending
                && (!state.waiters.is_empty()
                    || settings.durability == Durability::All
                    || pending_since.is_some_and(|t| now >= t + settings.read_only_sync_delay));
            let not_before = self.last_sync + settings.sync_pacing;
            if !state.control.is_empty()
                || (state.failed.is_some() && !state.waiters.is_empty())
                || (sync_due && now >= not_before)
            {
                break;
            }
            // A failed trail only waits to be shut down.
            let deadline = if state.failed.is_some() {
                now + Duration::from_secs(3600)
            } else {
                let digest_deadline = self.digest_deadline();
                if now >= digest_deadline {
                    break;
                }
                match (sync_due, pending_since) {
                    (true, _) => digest_deadline.min(not_before),
                    (false, Some(since)) => {
                        digest_deadline.min(since + settings.read_only_sync_delay)
                    }
                    (false, None) => digest_deadline,
                }
            };
            // While pacing, a new waiter need not wake the flusher: it has a deadline.
            state.flusher_waiting = !sync_due;
            state.flusher_idle = !pending;
            let timeout = deadline.saturating_duration_since(now);
            state = inner
                .wake
                .wait_timeout(state, timeout)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
            state.flusher_waiting = false;
            state.flusher_idle = false;
        }
        let target = state.written.clone();
        let (waiters, later): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiters)
            .into_iter()
            .partition(|(seq, _)| *seq <= target.seq || state.failed.is_some());
        state.waiters = later;
        // Finished segments are synced every round; they are sealed (trimmed) once no
        // write into them is still in flight.
        let busy_from = state.inflight.front().map_or(u64::MAX, |r| r.first_segment);
        let (seal, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.finished)
            .into_iter()
            .partition(|f| f.index < busy_from);
        state.finished = keep;
        let unsealed = state.finished.iter().map(|f| f.file.clone()).collect();
        Round {
            target,
            finished: seal,
            unsealed,
            active: state.active.file.clone(),
            waiters,
            times: std::mem::take(&mut state.times),
            control: std::mem::take(&mut state.control),
            failed: state.failed.clone(),
        }
    }

    fn digest_deadline(&self) -> Instant {
        match self.unsigned_since {
            Some(since) => since + self.inner.settings.digest_interval,
            None => self.last_digest_at + self.inner.settings.heartbeat_interval,
        }
    }

    /// Does one round; returns true when the flusher must stop.
    fn work(&mut self, round: Round) -> bool {
        let result = match &round.failed {
            Some(failed) => Err(failed.clone()),
            None => self.sync(&round),
        };
        if let Err(error) = &result {
            fail(&mut self.inner.lock(), error);
        }
        let failed = result.as_ref().err().cloned();
        for (_, done) in round.waiters {
            done.complete(result.clone());
        }
        if failed.is_none() {
            self.digest_if_due();
        }
        for control in round.control {
            match control {
                Control::Digest(done) => {
                    let outcome = match &failed {
                        Some(error) => Err(error.clone()),
                        None => self.write_digest(Reason::Requested),
                    };
                    done.complete(outcome);
                }
                Control::Shutdown(done) => {
                    let outcome = match &failed {
                        Some(error) => Err(error.clone()),
                        None => self.finish(),
                    };
                    let mut state = self.inner.lock();
                    let spare = state.active.index + 1;
                    state.preparer.stop(&self.inner.settings.dir, spare);
                    drop(state);
                    done.complete(outcome);
                    return true;
                }
            }
        }
        false
    }

    /// Makes everything written up to `round.target` durable.
    fn sync(&mut self, round: &Round) -> Completion {
        copy_staged(&self.inner)?;
        for finished in &round.finished {
            finished
                .file
                .sync_data()
                .map_err(|e| format!("flushing {}: {e}", finished.path.display()))?;
        }
        for file in &round.unsealed {
            file.sync_data()
                .map_err(|e| format!("flushing a finished audit segment: {e}"))?;
        }
        if round.target.seq > self.durable.seq {
            self.last_sync = Instant::now();
            round
                .active
                .sync_data()
                .map_err(|e| format!("flushing the active audit segment: {e}"))?;
            self.inner
                .shared
                .stats
                .syncs
                .fetch_add(1, Ordering::Relaxed);
            let added = round.target.seq - self.durable.seq;
            self.unsigned += added;
            self.unsigned_since.get_or_insert_with(Instant::now);
            self.times.merge(round.times);
            self.durable = round.target.clone();
        }
        if !round.finished.is_empty() {
            let state = self.inner.lock();
            for finished in &round.finished {
                state.preparer.seal(finished.path.clone(), finished.end);
            }
        }
        Ok(())
    }

    fn digest_if_due(&mut self) {
        let settings = &self.inner.settings;
        let reason = if self.unsigned >= settings.digest_max_records {
            Some(Reason::Records)
        } else if self
            .unsigned_since
            .is_some_and(|since| since.elapsed() >= settings.digest_interval)
        {
            Some(Reason::Interval)
        } else if self.unsigned == 0 && self.last_digest_at.elapsed() >= settings.heartbeat_interval
        {
            Some(Reason::Heartbeat)
        } else {
            None
        };
        if let Some(reason) = reason
            && let Err(error) = self.write_digest(reason)
        {
            fail(&mut self.inner.lock(), &error);
        }
    }

    /// Signs the durable chain head and appends the digest durably.
    fn write_digest(&mut self, reason: Reason) -> Completion {
        let previous = self.last_digest.as_ref();
        let iso = |millis: Option<i64>| millis.map(|m| Timestamp::from_millis(m).iso8601_seconds());
        let digest = Digest {
            version: 1,
            digest_seq: previous.map_or(1, |d| d.digest_seq + 1),
            digest_time: self.clock.now().iso8601_millis(),
            reason,
            first_seq: previous.map_or(1, |d| d.last_seq + 1),
            last_seq: self.durable.seq,
            chain_head: chain::to_hex(&self.durable.head),
            segment: self
                .durable
                .position
                .as_ref()
                .map(|(name, _)| name.to_string()),
            end_offset: self.durable.position.as_ref().map(|(_, offset)| *offset),
            oldest_event_time: iso(self.times.oldest),
            newest_event_time: iso(self.times.newest),
            public_key_fingerprint: self.key.fingerprint().to_owned(),
            signature_algorithm: digest::SIGNATURE_ALGORITHM.to_owned(),
            previous_digest_hash: previous.map(|d| d.hash_hex.clone()),
            previous_digest_signature: previous.map(|d| d.signature_hex.clone()),
        };
        let (line, hash_hex, signature_hex) =
            digest::sign_line(&digest, &self.key).map_err(|e| format!("encoding a digest: {e}"))?;
        std::io::Write::write_all(&mut self.digests_file, &line)
            .and_then(|()| self.digests_file.sync_data())
            .map_err(|e| format!("writing {}: {e}", digest::DIGEST_FILE))?;
        self.last_digest = Some(LastDigest {
            digest_seq: digest.digest_seq,
            last_seq: digest.last_seq,
            hash_hex,
            signature_hex,
        });
        self.last_digest_at = Instant::now();
        self.unsigned = 0;
        self.unsigned_since = None;
        self.times = TimeRange::default();
        self.inner
            .shared
            .stats
            .digests
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Clean stop (everything was synced by this round): a final digest, the active
    /// segment trimmed (or removed if empty).
    fn finish(&mut self) -> Completion {
        self.write_digest(Reason::Shutdown)?;
        let state = self.inner.lock();
        let path = self.inner.settings.dir.join(&*state.active.name);
        if state.active.offset == 0 {
            std::fs::remove_file(&path)
                .and_then(|()| segment::sync_dir(&self.inner.settings.dir))
                .map_err(|e| format!("removing the empty {}: {e}", state.active.name))?;
        } else {
            state
                .active
                .file
                .set_len(state.active.offset)
                .and_then(|()| state.active.file.sync_all())
                .map_err(|e| format!("trimming {}: {e}", state.active.name))?;
        }
        // Everything staged is in the segments now: a stopped trail is its segments and
        // digests alone, and no stale ring lines outlive it.
        let ring = crate::staging::ring_path(&self.inner.settings.dir);
        match std::fs::remove_file(&ring) {
            Ok(()) => segment::sync_dir(&self.inner.settings.dir)
                .map_err(|e| format!("removing {}: {e}", ring.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", ring.display())),
        }
        Ok(())
    }
}

enum PrepareJob {
    Prepare(u64),
    Seal(PathBuf, u64),
}

/// A helper thread that creates the next segment ahead of time (zero-filling it costs
/// tens of milliseconds) and trims finished ones.
struct Preparer {
    jobs: Option<Sender<PrepareJob>>,
    ready: Receiver<(u64, std::io::Result<File>)>,
    requested: Option<u64>,
    handle: Option<JoinHandle<()>>,
    dir: PathBuf,
    segment_bytes: u64,
}

impl Preparer {
    fn start(dir: PathBuf, segment_bytes: u64) -> Self {
        let (jobs_tx, jobs_rx) = mpsc::channel::<PrepareJob>();
        let (ready_tx, ready) = mpsc::channel();
        let thread_dir = dir.clone();
        let handle = std::thread::Builder::new()
            .name("kura-audit-segments".to_owned())
            .spawn(move || {
                for job in jobs_rx {
                    match job {
                        PrepareJob::Prepare(index) => {
                            let file =
                                segment::create_preallocated(&thread_dir, index, segment_bytes);
                            if ready_tx.send((index, file)).is_err() {
                                return;
                            }
                        }
                        PrepareJob::Seal(path, end) => {
                            if let Err(error) = segment::trim(&path, end) {
                                tracing::warn!(path = %path.display(), %error, "cannot trim a finished audit segment; it is trimmed at the next start");
                            }
                        }
                    }
                }
            })
            .map_err(|error| tracing::warn!(%error, "cannot start the audit segment thread; segments are prepared inline"))
            .ok();
        Self {
            jobs: handle.as_ref().map(|_| jobs_tx),
            ready,
            requested: None,
            handle,
            dir,
            segment_bytes,
        }
    }

    fn prepare(&mut self, index: u64) {
        if let Some(jobs) = &self.jobs
            && jobs.send(PrepareJob::Prepare(index)).is_ok()
        {
            self.requested = Some(index);
        }
    }

    fn seal(&self, path: PathBuf, end: u64) {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(PrepareJob::Seal(path.clone(), end)).is_ok());
        if !sent && let Err(error) = segment::trim(&path, end) {
            tracing::warn!(path = %path.display(), %error, "cannot trim a finished audit segment");
        }
    }

    /// The pre-zeroed segment `index`, waiting for the helper if it is still filling it.
    fn take(&mut self, index: u64) -> Result<File, String> {
        if self.requested == Some(index) {
            self.requested = None;
            while let Ok((ready_index, file)) = self.ready.recv() {
                if ready_index == index {
                    return file.map_err(|e| format!("creating segment {index}: {e}"));
                }
            }
        }
        segment::create_preallocated(&self.dir, index, self.segment_bytes)
            .map_err(|e| format!("creating segment {index}: {e}"))
    }

    /// Stops the helper and removes the spare segment it prepared, which holds no record.
    fn stop(&mut self, dir: &std::path::Path, spare: u64) {
        self.jobs = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let mut spare_created = false;
        while let Ok((index, file)) = self.ready.try_recv() {
            spare_created |= index == spare && file.is_ok();
        }
        if spare_created {
            let path = dir.join(segment::segment_name(spare));
            if std::fs::remove_file(&path)
                .and_then(|()| segment::sync_dir(dir))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "cannot remove the unused audit segment");
            }
        }
    }
}
