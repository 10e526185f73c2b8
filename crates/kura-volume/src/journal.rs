//! The torn-write journal: every block a write puts over existing data survives a
//! `kill -9` of the process in the middle of that write.
//!
//! Why: a block is re-encrypted with a fresh nonce every time it is written, so *all* of
//! its stored bytes change. The kernel copies a `pwrite` into the page cache page by page
//! and stops between pages when the process gets SIGKILL, so a killed write can leave a
//! block half new, half old: it no longer authenticates, and the data that was in it
//! before (fsync'd long ago, perhaps) is lost. PostgreSQL rewrites the current WAL page
//! on every commit, so this would lose committed transactions.
//!
//! How: before the in-place write, the blocks that overwrite existing data are written
//! to a journal slot (one per concurrent write, `<backing>/journal/slot-N`), followed by
//! the in-place write, followed by clearing the slot. A slot that still holds a record at
//! mount time belongs to a write that was in flight when the process died; mounting
//! replays it (rewrites its blocks in place and sets the file's size), so every block is
//! either entirely old or entirely new. Appends past the old end need no copy: the record
//! says how long the file was, and the replay cuts a torn append off.
//!
//! The record header is authenticated with HMAC-SHA256 under a key derived from the volume
//! key; the block copies authenticate themselves (AES-GCM). Page-cache contents survive
//! the death of the process, so no fsync is needed for this guarantee; a power failure is
//! another matter (see docs/volume-crypto.md).
//!
//! ```text
//! record at offset 0 of a slot file:
//!   "KVJ1" ‖ u32 BE header length H ‖ header (H bytes) ‖ HMAC (32) ‖ block copies
//! header:
//!   seq u64 ‖ file id (16) ‖ replay size u64 ‖ u16 path length ‖ path (relative, encrypted
//!   names) ‖ u16 run count ‖ runs: first block u64, stored length u32
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kura_crypto::volume::{ID_LEN, VolumeCipher};
use parking_lot::Mutex;

use crate::format::{self, FileHeader, HEADER_LEN};

const MAGIC: &[u8; 4] = b"KVJ1";
const MAC_LEN: usize = 32;
const SLOT_PREFIX: &str = "slot-";

/// A run of consecutive stored blocks to be written in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<'a> {
    pub first_block: u64,
    pub stored: &'a [u8],
}

impl Run<'_> {
    pub fn offset(&self) -> u64 {
        format::block_offset(self.first_block)
    }
}

pub(crate) struct Journal {
    dir: PathBuf,
    /// Canonical path of the data root, to record paths relative to it.
    data_root: PathBuf,
    free: Mutex<Vec<Slot>>,
    next_slot: AtomicUsize,
    seq: AtomicU64,
}

struct Slot {
    file: File,
}

/// An open record: cleared (and its slot returned) when dropped, after the in-place write.
pub(crate) struct Record<'a> {
    journal: &'a Journal,
    slot: Option<Slot>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // Clearing the magic is enough: a slot without it holds no record. A record
            // left behind would be replayed at the next mount over newer data, so if
            // that fails, empty the file and do not reuse the slot.
            if slot.file.write_all_at(&[0u8; 4], 0).is_ok() {
                self.journal.free.lock().push(slot);
            } else if slot.file.set_len(0).is_err() {
                tracing::error!("could not clear a journal slot");
            }
        }
    }
}

impl Journal {
    pub fn open(dir: &Path, data_root: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let next = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(SLOT_PREFIX))
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .max()
            .map_or(0, |n| n + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            data_root: data_root.canonicalize()?,
            free: Mutex::new(Vec::new()),
            next_slot: AtomicUsize::new(next),
            seq: AtomicU64::new(1),
        })
    }

    fn take_slot(&self) -> io::Result<Slot> {
        if let Some(slot) = self.free.lock().pop() {
            return Ok(slot);
        }
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.dir.join(format!("{SLOT_PREFIX}{n}")))?;
        Ok(Slot { file })
    }

    /// The path of `file` relative to the data root, or `None` if it has been unlinked
    /// (nothing to protect then) or is not under the root.
    fn relative_path(&self, file: &File) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt as _;
        let link = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        let rel = link.strip_prefix(&self.data_root).ok()?;
        let bytes = rel.as_os_str().as_bytes();
        if bytes.is_empty() || bytes.ends_with(b" (deleted)") {
            return None;
        }
        Some(bytes.to_vec())
    }

    /// Writes a record for a write to `file` about to put `runs` in place, where the
    /// backing file is `old_backing` bytes long now and must be `replay_size` bytes after
    /// a replay. Only the parts of `runs` that start before `old_backing` are copied.
    pub fn record<'j>(
        &'j self,
        cipher: &VolumeCipher,
        file: &File,
        file_id: &[u8; ID_LEN],
        runs: &[Run<'_>],
        old_backing: u64,
        replay_size: u64,
    ) -> io::Result<Option<Record<'j>>> {
        let Some(path) = self.relative_path(file) else {
            return Ok(None);
        };
        let path_len = u16::try_from(path.len()).map_err(|_| io::Error::other("path too long"))?;
        // The journaled parts: blocks starting before the old end.
        let mut copies: Vec<Run<'_>> = Vec::new();
        for run in runs {
            let mut bytes = 0usize;
            let mut block = run.first_block;
            let mut pos = 0usize;
            while pos < run.stored.len() && format::block_offset(block) < old_backing {
                let len = (run.stored.len() - pos).min(format::STORED as usize);
                bytes += len;
                pos += len;
                block += 1;
            }
            if bytes > 0 {
                copies.push(Run {
                    first_block: run.first_block,
                    stored: run.stored.get(..bytes).unwrap_or_default(),
                });
            }
        }
        let run_count =
            u16::try_from(copies.len()).map_err(|_| io::Error::other("too many runs"))?;
        let mut header = Vec::with_capacity(64 + path.len() + copies.len() * 12);
        header.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        header.extend_from_slice(file_id);
        header.extend_from_slice(&replay_size.to_be_bytes());
        header.extend_from_slice(&path_len.to_be_bytes());
        header.extend_from_slice(&path);
        header.extend_from_slice(&run_count.to_be_bytes());
        for copy in &copies {
            let len =
                u32::try_from(copy.stored.len()).map_err(|_| io::Error::other("run too long"))?;
            header.extend_from_slice(&copy.first_block.to_be_bytes());
            header.extend_from_slice(&len.to_be_bytes());
        }
        let header_len =
            u32::try_from(header.len()).map_err(|_| io::Error::other("header too long"))?;
        let mut head = Vec::with_capacity(8 + header.len() + MAC_LEN);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&header_len.to_be_bytes());
        head.extend_from_slice(&header);
        let mac = cipher.journal_mac(&head);
        head.extend_from_slice(&mac);

        let slot = self.take_slot()?;
        // The record goes in with its magic zeroed, and the magic follows in a write of
        // its own. A SIGKILL can stop a long write between pages, leaving a prefix of it:
        // a complete header in front of block copies that are half this record's and
        // half the previous one's (stale, yet authentic blocks of the same file). Only a
        // record whose every byte landed carries the magic.
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + copies.len());
        parts.push(&[0u8; MAGIC.len()]);
        parts.push(head.get(MAGIC.len()..).unwrap_or_default());
        parts.extend(copies.iter().map(|c| c.stored));
        let written = crate::sys::pwrite_all_vectored(&slot.file, &parts, 0)
            .and_then(|()| slot.file.write_all_at(MAGIC, 0));
        if let Err(e) = written {
            // The slot may now hold a partial record: discard the slot rather than reuse it.
            drop(slot);
            return Err(e);
        }
        Ok(Some(Record {
            journal: self,
            slot: Some(slot),
        }))
    }

    /// Replays every record left in the journal (writes that were in flight when the
    /// process died), then clears the slots. Returns how many records were replayed.
    pub fn recover(dir: &Path, data_root: &Path, cipher: &VolumeCipher) -> io::Result<usize> {
        let mut replayed = 0;
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(0);
        };
        let mut slots: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(SLOT_PREFIX))
            .map(|e| e.path())
            .collect();
        slots.sort();
        for slot in &slots {
            let bytes = fs::read(slot)?;
            match parse(&bytes, cipher) {
                Parsed::Empty => {}
                Parsed::Invalid => {
                    tracing::warn!(slot = %slot.display(), "ignoring an unauthenticated journal record");
                }
                Parsed::Record(record) if !copies_authenticate(cipher, &record) => {
                    tracing::warn!(slot = %slot.display(), "ignoring a journal record with damaged block copies");
                }
                Parsed::Record(record) => {
                    if replay(data_root, &record)? {
                        replayed += 1;
                    }
                }
            }
        }
        for slot in &slots {
            fs::remove_file(slot)?;
        }
        crate::meta::sync_dir(dir).map_err(io::Error::other)?;
        Ok(replayed)
    }
}

struct ParsedRecord<'a> {
    file_id: [u8; ID_LEN],
    replay_size: u64,
    path: &'a [u8],
    runs: Vec<Run<'a>>,
}

enum Parsed<'a> {
    Empty,
    Invalid,
    Record(ParsedRecord<'a>),
}

fn parse<'a>(bytes: &'a [u8], cipher: &VolumeCipher) -> Parsed<'a> {
    if bytes.get(..4) != Some(MAGIC.as_slice()) {
        return Parsed::Empty;
    }
    parse_record(bytes, cipher).map_or(Parsed::Invalid, Parsed::Record)
}

fn parse_record<'a>(bytes: &'a [u8], cipher: &VolumeCipher) -> Option<ParsedRecord<'a>> {
    let header_len = usize::try_from(u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?)).ok()?;
    let head_end = 8usize.checked_add(header_len)?;
    let head = bytes.get(..head_end)?;
    let mac = bytes.get(head_end..head_end.checked_add(MAC_LEN)?)?;
    if !cipher.verify_journal_mac(head, mac) {
        return None;
    }
    let mut r = Reader(bytes.get(8..head_end)?);
    let _seq = r.u64()?;
    let file_id: [u8; ID_LEN] = r.take(ID_LEN)?.try_into().ok()?;
    let replay_size = r.u64()?;
    let path_len = usize::from(r.u16()?);
    let path = r.take(path_len)?;
    let run_count = r.u16()?;
    let mut data = bytes.get(head_end + MAC_LEN..)?;
    let mut runs = Vec::with_capacity(usize::from(run_count));
    for _ in 0..run_count {
        let first_block = r.u64()?;
        let len = usize::try_from(r.u32()?).ok()?;
        let (stored, rest) = (data.get(..len)?, data.get(len..)?);
        data = rest;
        runs.push(Run {
            first_block,
            stored,
        });
    }
    Some(ParsedRecord {
        file_id,
        replay_size,
        path,
        runs,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Whether every block copy in `record` is a whole, authentic block of its file at its
/// position: replaying anything else would turn an interrupted write into a damaged file.
fn copies_authenticate(cipher: &VolumeCipher, record: &ParsedRecord<'_>) -> bool {
    let mut plain = vec![0u8; format::BLOCK as usize];
    record.runs.iter().all(|run| {
        run.stored
            .chunks(format::STORED as usize)
            .zip(run.first_block..)
            .all(|(stored, block)| {
                let Some(len) = stored.len().checked_sub(format::OVERHEAD as usize) else {
                    return false;
                };
                plain.get_mut(..len).is_some_and(|out| {
                    cipher
                        .open_block(&record.file_id, block, stored, out)
                        .is_ok()
                })
            })
    })
}

fn replay(data_root: &Path, record: &ParsedRecord<'_>) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let rel = Path::new(std::ffi::OsStr::from_bytes(record.path));
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Ok(false);
    }
    let path = data_root.join(rel);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        // Renamed or removed since: nothing to repair under that name.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; HEADER_LEN as usize];
    if file.read_exact_at(&mut header, 0).is_err() {
        return Ok(false);
    }
    match FileHeader::decode(&header) {
        Ok(h) if h.id == record.file_id => {}
        _ => return Ok(false),
    }
    for run in &record.runs {
        file.write_all_at(run.stored, run.offset())?;
    }
    file.set_len(record.replay_size)?;
    file.sync_all()?;
    tracing::info!(file = %path.display(), blocks = record.runs.len(), "replayed an interrupted write");
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use kura_crypto::SecretBytes;

    const ID: [u8; ID_LEN] = [7u8; ID_LEN];

    fn cipher_for(key: u8) -> VolumeCipher {
        VolumeCipher::new(&SecretBytes::copy_from(&[key; 32])).unwrap()
    }

    /// Block 0 of file `ID` holding 100 bytes of `fill`, as stored.
    fn sealed(cipher: &VolumeCipher, fill: u8) -> Vec<u8> {
        let mut nonces = cipher.reserve_nonces(1).unwrap();
        let mut stored = vec![0u8; 100 + format::OVERHEAD as usize];
        cipher
            .seal_block(&mut nonces, &ID, 0, &[fill; 100], &mut stored)
            .unwrap();
        stored
    }

    /// A data root holding file `f` (id `ID`) whose block 0 is `old`, and a journal.
    fn volume_with_file(old: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf, File) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let jdir = tmp.path().join("journal");
        fs::create_dir_all(&data).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(data.join("f"))
            .unwrap();
        file.write_all_at(&FileHeader { id: ID }.encode(), 0)
            .unwrap();
        file.write_all_at(old, HEADER_LEN).unwrap();
        (tmp, data, jdir, file)
    }

    fn block0(file: &File, len: usize) -> Vec<u8> {
        let mut now = vec![0u8; len];
        file.read_exact_at(&mut now, HEADER_LEN).unwrap();
        now
    }

    #[test]
    fn a_record_is_cleared_when_the_write_completes_and_replayed_when_it_did_not() {
        let cipher = cipher_for(1);
        let old = sealed(&cipher, 0xaa);
        let (_tmp, data, jdir, file) = volume_with_file(&old);
        let end = HEADER_LEN + old.len() as u64;
        let journal = Journal::open(&jdir, &data).unwrap();
        let new = sealed(&cipher, 0xbb);
        let run = Run {
            first_block: 0,
            stored: &new,
        };
        {
            let record = journal
                .record(&cipher, &file, &ID, &[run], end, end)
                .unwrap();
            assert!(record.is_some());
            // completed: dropped -> cleared
        }
        assert_eq!(Journal::recover(&jdir, &data, &cipher).unwrap(), 0);

        let journal = Journal::open(&jdir, &data).unwrap();
        let record = journal
            .record(&cipher, &file, &ID, &[run], end, end)
            .unwrap();
        // "kill -9" in the middle of the in-place write: half of it landed.
        file.write_all_at(&new[..50], HEADER_LEN).unwrap();
        std::mem::forget(record);
        // plus a torn append past the old end, which the replay cuts off
        file.write_all_at(&[1u8; 10], end).unwrap();
        assert_eq!(Journal::recover(&jdir, &data, &cipher).unwrap(), 1);
        assert_eq!(block0(&file, new.len()), new);
        assert_eq!(file.metadata().unwrap().len(), end);
        // slots are gone after recovery
        assert_eq!(fs::read_dir(&jdir).unwrap().count(), 0);
    }

    #[test]
    fn records_under_another_key_or_for_another_file_are_not_replayed() {
        let cipher = cipher_for(1);
        let other = cipher_for(2);
        let old = sealed(&cipher, 0xaa);
        let (_tmp, data, jdir, file) = volume_with_file(&old);
        let end = HEADER_LEN + old.len() as u64;
        let journal = Journal::open(&jdir, &data).unwrap();
        let new = sealed(&cipher, 0xbb);
        let run = Run {
            first_block: 0,
            stored: &new,
        };
        std::mem::forget(
            journal
                .record(&other, &file, &ID, &[run], end, end)
                .unwrap(),
        );
        std::mem::forget(
            journal
                .record(&cipher, &file, &[8u8; ID_LEN], &[run], end, end)
                .unwrap(),
        );
        assert_eq!(Journal::recover(&jdir, &data, &cipher).unwrap(), 0);
        assert_eq!(block0(&file, old.len()), old);
    }

    #[test]
    fn a_record_whose_block_copies_are_damaged_is_not_replayed() {
        let cipher = cipher_for(1);
        let old = sealed(&cipher, 0xaa);
        let (_tmp, data, jdir, file) = volume_with_file(&old);
        let end = HEADER_LEN + old.len() as u64;
        let journal = Journal::open(&jdir, &data).unwrap();
        let new = sealed(&cipher, 0xbb);
        let run = Run {
            first_block: 0,
            stored: &new,
        };
        std::mem::forget(
            journal
                .record(&cipher, &file, &ID, &[run], end, end)
                .unwrap(),
        );
        // The header is whole and authentic; the last byte of the block copy is not the
        // one written (as when a killed write left the slot's older bytes there).
        let slot = fs::read_dir(&jdir).unwrap().next().unwrap().unwrap().path();
        let len = fs::metadata(&slot).unwrap().len();
        let slot_file = OpenOptions::new().write(true).open(&slot).unwrap();
        slot_file.write_all_at(&[0x5a], len - 1).unwrap();
        assert_eq!(Journal::recover(&jdir, &data, &cipher).unwrap(), 0);
        assert_eq!(block0(&file, old.len()), old);
    }

    #[test]
    fn a_record_without_its_magic_is_not_replayed() {
        // What a write killed before its last step leaves: every byte but the magic.
        let cipher = cipher_for(1);
        let old = sealed(&cipher, 0xaa);
        let (_tmp, data, jdir, file) = volume_with_file(&old);
        let end = HEADER_LEN + old.len() as u64;
        let journal = Journal::open(&jdir, &data).unwrap();
        let new = sealed(&cipher, 0xbb);
        let run = Run {
            first_block: 0,
            stored: &new,
        };
        std::mem::forget(
            journal
                .record(&cipher, &file, &ID, &[run], end, end)
                .unwrap(),
        );
        let slot = fs::read_dir(&jdir).unwrap().next().unwrap().unwrap().path();
        let slot_file = OpenOptions::new().write(true).open(&slot).unwrap();
        slot_file.write_all_at(&[0u8; 4], 0).unwrap();
        assert_eq!(Journal::recover(&jdir, &data, &cipher).unwrap(), 0);
        assert_eq!(block0(&file, old.len()), old);
    }
}
