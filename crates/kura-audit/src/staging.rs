//! The staging ring: where a call's records go before the flusher copies them into the
//! segment, so that the request path makes no system call.
//!
//! Why: a `pwrite` per call into the segment was the largest part of the trail's cost
//! (ext4's buffered-write path, and the inode lock that two workers writing the same file
//! queue on; BENCHMARKS.md "Audit trail cost"). The ring is a file of
//! [`RING_BYTES`] mapped shared into memory: a call copies its lines into its reserved
//! range with a plain memory copy. Those bytes are in the page cache, so they survive a
//! `kill -9` of kura exactly as a `pwrite` would; the flusher copies everything staged
//! into the segment with one large `pwrite` per round, then syncs the segment as before.
//! At start-up, records that reached the ring but not the segment are recovered from it
//! ([`recover_lines`]).
//!
//! The ring is never synced: stable storage is the segment's business. Its pages are
//! only written back by the kernel's periodic writeback, so they rarely need to fault
//! back in, which is what made mapping the segment itself no faster (every `fdatasync`
//! write-protects a mapped segment's pages again).
//!
//! The crate's only `unsafe` code is here. What makes it sound:
//! - the ring file is created at its full size, zero-filled (so its blocks are allocated
//!   and a store never needs new space), before it is mapped, and is never shortened
//!   while mapped; every access is bounds-checked against the mapping (no SIGBUS from
//!   touching past the end of the file);
//! - the writer hands each byte range to exactly one call, under its lock, and gives the
//!   range out again only after the flusher has copied it into the segment: a range is
//!   written by one thread, then only read, then released; no two accesses race.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use crate::chain;

/// The ring's file name in the audit directory.
pub const RING_FILE: &str = "staging.ring";
/// The ring's size. At 30,000 calls/s of 1 KiB records the flusher, which copies at
/// least every few milliseconds, uses a few hundred KiB of it.
pub const RING_BYTES: usize = 16 << 20;

pub(crate) struct Ring {
    map: MmapRaw,
    // Kept open for as long as the mapping lives.
    _file: File,
}

impl Ring {
    /// Creates (or re-creates) the ring in `dir`, zero-filled, and maps it. Call only
    /// after [`recover_lines`] has taken what the previous run left in it.
    pub(crate) fn create(dir: &Path, bytes: usize) -> io::Result<Self> {
        let path = ring_path(dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        crate::segment::write_zeros(&mut file, bytes as u64)?;
        let map = MmapOptions::new().len(bytes).populate().map_raw(&file)?;
        Ok(Self { map, _file: file })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The ring position of `pos` (positions grow without bound; the ring wraps).
    pub(crate) fn offset(&self, pos: u64) -> usize {
        // The ring's length fits in a usize, so the remainder does too.
        usize::try_from(pos % self.map.len() as u64).unwrap_or(0)
    }

    fn range(&self, offset: usize, len: usize) -> io::Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.map.len() => Ok(offset),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a range past the end of the audit staging ring",
            )),
        }
    }

    /// Copies `bytes` to `offset`: the caller owns that range (reserved by the writer).
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let start = self.range(offset, bytes.len())?;
        #[allow(unsafe_code)]
        // SAFETY: the range is inside the mapping (checked), reserved for this caller
        // alone (module doc), and `bytes` does not point into the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(start),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Runs `f` on the bytes at `offset..offset + len`: a range written and not yet
    /// released, so nothing writes it meanwhile.
    pub(crate) fn read<T>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> io::Result<T> {
        let start = self.range(offset, len)?;
        #[allow(unsafe_code)]
        // SAFETY: inside the mapping (checked); the range was written before the caller
        // took it and is not given out again until the caller releases it (module doc),
        // so no write aliases this shared slice while it lives.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) };
        Ok(f(bytes))
    }
}

pub(crate) fn ring_path(dir: &Path) -> PathBuf {
    dir.join(RING_FILE)
}

/// The lines a crashed run left in the ring that continue the chain after record
/// `last_seq` whose chain value is `head`, in order, each with its newline. The ring
/// holds lines of earlier laps and a partly copied line where the crash hit: only lines
/// that parse and link to the chain are taken, and the first missing sequence number
/// ends the recovery (a call whose record was not complete was never answered, nor was
/// any call after it).
pub(crate) fn recover_lines(dir: &Path, last_seq: u64, head: [u8; 32]) -> io::Result<Vec<u8>> {
    let bytes = match std::fs::read(ring_path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Each candidate: the stored line and its parts, by sequence number.
    let mut candidates: std::collections::HashMap<u64, Vec<(&[u8], chain::Line<'_>)>> =
        Default::default();
    for piece in bytes.split(|b| *b == b'\n') {
        // A line starts after the previous newline or after the zeros of an unused part.
        let start = piece.iter().position(|b| *b != 0).unwrap_or(piece.len());
        let piece = piece.get(start..).unwrap_or_default();
        if let Ok(line) = chain::parse_line(piece)
            && line.seq > last_seq
        {
            candidates.entry(line.seq).or_default().push((piece, line));
        }
    }
    let mut out = Vec::new();
    let (mut seq, mut head) = (last_seq, head);
    while let Some((piece, linked)) = candidates.get(&(seq + 1)).and_then(|lines| {
        lines.iter().find_map(|(piece, line)| {
            let linked = chain::link(&head, line.seq, &chain::record_digest(line.record));
            (linked == line.hash).then_some((*piece, linked))
        })
    }) {
        out.extend_from_slice(piece);
        out.push(b'\n');
        seq += 1;
        head = linked;
    }
    Ok(out)
}
