//! The snapshot store: content-addressed chunks of ciphertext and the manifests that list
//! them.
//!
//! A snapshot of a database is a manifest of the files of its volume's *backing*
//! directory — already ciphertext — cut into 1 MiB chunks named by their SHA-256. A chunk
//! is stored once however many snapshots contain it, so ten snapshots of a database that
//! changes 1% between them cost little more than one. The store is an [`ObjectStore`]:
//! a directory today, an S3-compatible bucket tomorrow, behind the same four calls.
//!
//! ```text
//! <store>/chunks/<first 2 hex>/<sha-256 hex>   chunk bytes (ciphertext)
//! <store>/manifests/<snapshot resource id>.json
//! ```
//!
//! The file work of a capture, a restore or a collection runs in
//! `tokio::task::block_in_place`: it takes seconds, and must not hold up the async
//! workers that answer API calls meanwhile.
//!
//! Deleting a snapshot deletes its manifest; [`ChunkStore::collect_garbage`] then removes
//! chunks no manifest names. Captures hold the store's lock shared and garbage collection
//! holds it exclusively, so a chunk written by a capture in progress is never collected
//! before the capture's manifest exists.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) const CHUNK_SIZE: usize = 1024 * 1024;
const MANIFEST_VERSION: u32 = 1;
/// How many bytes of chunks a capture writes before making them durable together (and
/// reporting progress): up to three batches are in memory at once (one being filled,
/// one queued, one being stored), against flushes per snapshot.
const BATCH_BYTES: u64 = 16 * CHUNK_SIZE as u64;

/// Whether a tree written out of the store must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// A database's files: durable before the call returns.
    Durable,
    /// A working copy that is redone after a crash (the source of a re-encryption).
    Scratch,
}

/// The narrow seam to where chunks and manifests live.
pub(crate) trait ObjectStore: Send + Sync {
    /// Stores each `(key, bytes)` whose key does not exist yet; every one is durable
    /// when it returns. Returns how many it wrote.
    fn put_all_absent(&self, objects: &[(String, Vec<u8>)]) -> io::Result<usize>;
    /// Stores `bytes` under `key`, replacing any previous object.
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()>;
    fn get(&self, key: &str) -> io::Result<Vec<u8>>;
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Keys under `prefix` (not recursive into deeper prefixes' contents order).
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
}

/// Objects as files under a directory, each written atomically and durably.
pub(crate) struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl ObjectStore for DirectoryStore {
    /// The objects are written under temporary names, flushed together, renamed into
    /// place, and their directories flushed together: the filesystem's journal commits
    /// a batch's flushes at once instead of two commits per object, and no name ever
    /// points at bytes that are not yet durable (another capture that finds the name
    /// skips the chunk and may make its manifest durable at once).
    fn put_all_absent(&self, objects: &[(String, Vec<u8>)]) -> io::Result<usize> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let written = (|| {
            for (key, bytes) in objects {
                let path = self.path(key);
                // A chunk repeated within the batch (zeros, say) is written once.
                if !seen.insert(key.as_str()) || path.exists() {
                    continue;
                }
                staged.push((write_temporary(&path, bytes)?, path));
            }
            if staged.is_empty() {
                return Ok(0);
            }
            sync_paths(staged.iter().map(|(tmp, _)| tmp.as_path()))?;
            let mut dirs = Vec::new();
            for (tmp, path) in &staged {
                std::fs::rename(tmp, path)?;
                if let Some(dir) = path.parent()
                    && !dirs.contains(&dir)
                {
                    dirs.push(dir);
                }
            }
            sync_paths(dirs.into_iter())?;
            Ok(staged.len())
        })();
        if written.is_err() {
            for (tmp, _) in &staged {
                // Renamed ones are gone from here already; what remains is litter.
                let _ = std::fs::remove_file(tmp);
            }
        }
        written
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let tmp = write_temporary(&path, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::File::open(dir)?.sync_all()
    }

    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(key))
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        collect(&self.root, &self.root.join(prefix), &mut keys)?;
        keys.sort();
        Ok(keys)
    }
}

/// Writes `bytes` next to `path` under a temporary name (creating the directory), not
/// synced. Returns the temporary name.
fn write_temporary(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("an object key without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    Ok(tmp)
}

/// Chunks (key, bytes) on their way to the store together.
type Batch = Vec<(String, Vec<u8>)>;

/// Cuts the files of `entries` into chunks, names each by its hash (noted in its entry)
/// and sends them to the writer in batches of about [`BATCH_BYTES`], taking buffers
/// back from batches the writer has stored.
fn read_chunks(
    root: &Path,
    entries: &mut [Entry],
    to_store: std::sync::mpsc::SyncSender<Batch>,
    stored: std::sync::mpsc::Receiver<Batch>,
) -> io::Result<()> {
    let writer_stopped = |_| io::Error::other("the chunk writer stopped");
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut batch = Batch::new();
    let mut batch_bytes = 0u64;
    for entry in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
        let mut file = std::fs::File::open(root.join(&entry.path))?;
        loop {
            spare.extend(stored.try_iter().flatten().map(|(_, buffer)| buffer));
            let mut chunk = spare.pop().unwrap_or_default();
            chunk.resize(CHUNK_SIZE, 0);
            let read = read_full(&mut file, &mut chunk)?;
            if read == 0 {
                spare.push(chunk);
                break;
            }
            chunk.truncate(read);
            let hash = kura_crypto::sha256_hex(&chunk);
            batch_bytes += read as u64;
            batch.push((chunk_key(&hash), chunk));
            entry.chunks.push(hash);
            if batch_bytes >= BATCH_BYTES {
                to_store
                    .send(std::mem::take(&mut batch))
                    .map_err(writer_stopped)?;
                batch_bytes = 0;
            }
        }
    }
    to_store.send(batch).map_err(writer_stopped)
}

/// How many flushes run at once: enough for the journal to commit them together.
const SYNC_THREADS: usize = 8;

/// Flushes files and directories to stable storage, several at a time: concurrent
/// `fsync`s share the filesystem journal's commits, where one after another each waits
/// for its own. (Not `syncfs`: that would also flush every database's dirty pages on
/// the same filesystem, while its writes are frozen for a snapshot.)
pub(crate) fn sync_paths<'a>(paths: impl Iterator<Item = &'a Path>) -> io::Result<()> {
    let paths: Vec<&Path> = paths.collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || -> io::Result<()> {
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(path) = paths.get(index) else {
                return Ok(());
            };
            std::fs::File::open(path)?.sync_all()?;
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..SYNC_THREADS.min(paths.len()))
            .map(|_| scope.spawn(worker))
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("a flush thread panicked")))
        })
    })
}

/// Flushes every file and directory under `root`, `root` included.
pub(crate) fn sync_tree(root: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    walk(root, root, &mut entries)?;
    sync_entries(root, &entries)
}

/// Flushes the files and directories of `entries` (paths under `root`) and `root`.
fn sync_entries(root: &Path, entries: &[Entry]) -> io::Result<()> {
    let paths: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.kind != EntryKind::Symlink)
        .map(|e| root.join(&e.path))
        .chain(std::iter::once(root.to_owned()))
        .collect();
    sync_paths(paths.iter().map(PathBuf::as_path))
}

fn collect(root: &Path, dir: &Path, keys: &mut Vec<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, keys)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name = relative.to_string_lossy().into_owned();
            if !name.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
                keys.push(name);
            }
        }
    }
    Ok(())
}

/// What a snapshot contains: the backing tree, file by file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    pub entries: Vec<Entry>,
    /// Sum of file sizes.
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Path relative to the tree root.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// SHA-256 hex of each 1 MiB chunk (files only).
    #[serde(default)]
    pub chunks: Vec<String>,
    /// Symlink target.
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EntryKind {
    Directory,
    File,
    Symlink,
}

fn chunk_key(hash: &str) -> String {
    format!("chunks/{}/{hash}", hash.get(..2).unwrap_or("00"))
}

fn manifest_key(id: &str) -> String {
    format!("manifests/{id}.json")
}

/// Chunks and manifests, with the lock that keeps garbage collection safe.
pub(crate) struct ChunkStore {
    objects: Box<dyn ObjectStore>,
    gc: tokio::sync::RwLock<()>,
}

impl ChunkStore {
    pub fn new(objects: Box<dyn ObjectStore>) -> Self {
        Self {
            objects,
            gc: tokio::sync::RwLock::new(()),
        }
    }

    /// Stores the tree under `root` as snapshot `id`, reporting progress in bytes.
    /// Reading and hashing one batch of chunks overlaps with storing the batch before
    /// it (on a writer thread), and chunk buffers go back and forth between the two
    /// instead of being allocated per chunk.
    pub async fn capture(
        &self,
        id: &str,
        root: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<Manifest> {
        let _shared = self.gc.read().await;
        tokio::task::block_in_place(|| self.capture_tree(id, root, progress))
    }

    fn capture_tree(
        &self,
        id: &str,
        root: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<Manifest> {
        let mut entries = Vec::new();
        walk(root, root, &mut entries)?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        std::thread::scope(|scope| {
            let (to_store, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
            let (to_reuse, stored) = std::sync::mpsc::channel::<Batch>();
            let writer = scope.spawn(move || {
                let mut done = 0u64;
                for batch in batches {
                    self.objects.put_all_absent(&batch)?;
                    done += batch.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
                    progress(done, total);
                    // The reader may be done already; then the buffers are just freed.
                    let _ = to_reuse.send(batch);
                }
                Ok(())
            });
            let read = read_chunks(root, &mut entries, to_store, stored);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the chunk writer panicked")));
            // The writer's error is the cause when both fail (the reader then only saw
            // its channel close).
            written.and(read)
        })?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            entries,
            bytes: total,
        };
        self.put_manifest(id, &manifest)?;
        Ok(manifest)
    }

    pub fn put_manifest(&self, id: &str, manifest: &Manifest) -> io::Result<()> {
        let bytes = serde_json::to_vec(manifest).map_err(io::Error::other)?;
        self.objects.put(&manifest_key(id), &bytes)
    }

    pub fn manifest(&self, id: &str) -> io::Result<Manifest> {
        let bytes = self.objects.get(&manifest_key(id))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    /// Writes the tree of snapshot `id` under `target` (which must not exist yet),
    /// reporting progress in bytes; with [`Persist::Durable`], everything written is
    /// durable when it returns.
    pub async fn materialize(
        &self,
        id: &str,
        target: &Path,
        persist: Persist,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<()> {
        let _shared = self.gc.read().await;
        tokio::task::block_in_place(|| self.materialize_tree(id, target, persist, progress))
    }

    fn materialize_tree(
        &self,
        id: &str,
        target: &Path,
        persist: Persist,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<()> {
        let manifest = self.manifest(id)?;
        std::fs::create_dir_all(target)?;
        let mut done = 0u64;
        for entry in &manifest.entries {
            let path = target.join(&entry.path);
            match entry.kind {
                EntryKind::Directory => std::fs::create_dir_all(&path)?,
                EntryKind::Symlink => {
                    std::os::unix::fs::symlink(entry.target.clone().unwrap_or_default(), &path)?;
                }
                EntryKind::File => {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)?;
                    for hash in &entry.chunks {
                        let chunk = self.objects.get(&chunk_key(hash))?;
                        if kura_crypto::sha256_hex(&chunk) != *hash {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("chunk {hash} is damaged"),
                            ));
                        }
                        file.write_all(&chunk)?;
                        done += chunk.len() as u64;
                        progress(done, manifest.bytes);
                    }
                }
            }
            if entry.kind != EntryKind::Symlink {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(entry.mode & 0o7777),
                )?;
            }
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))?;
        }
        match persist {
            // Flushed together at the end, files and directory entries alike; the
            // manifest already lists them, so the tree is not walked again.
            Persist::Durable => sync_entries(target, &manifest.entries),
            Persist::Scratch => Ok(()),
        }
    }

    pub fn delete_manifest(&self, id: &str) -> io::Result<()> {
        self.objects.delete(&manifest_key(id))
    }

    /// Removes chunks no manifest names any more. Returns how many it removed.
    pub async fn collect_garbage(&self) -> io::Result<usize> {
        let _exclusive = self.gc.write().await;
        tokio::task::block_in_place(|| self.remove_unused_chunks())
    }

    fn remove_unused_chunks(&self) -> io::Result<usize> {
        let mut live = std::collections::HashSet::new();
        for key in self.objects.list("manifests")? {
            // A manifest deleted meanwhile names nothing any more.
            let bytes = match self.objects.get(&key) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                other => other?,
            };
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
            for entry in manifest.entries {
                live.extend(entry.chunks.into_iter().map(|h| chunk_key(&h)));
            }
        }
        let mut removed = 0;
        for key in self.objects.list("chunks")? {
            if !live.contains(&key) {
                self.objects.delete(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let Some(rest) = buffer.get_mut(filled..) else {
            break;
        };
        match file.read(rest)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Lists a tree in a stable order (directories before their contents).
fn walk(root: &Path, dir: &Path, entries: &mut Vec<Entry>) -> io::Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let relative = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_string_lossy()
            .into_owned();
        let kind = if meta.file_type().is_symlink() {
            EntryKind::Symlink
        } else if meta.is_dir() {
            EntryKind::Directory
        } else {
            EntryKind::File
        };
        entries.push(Entry {
            path: relative,
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == EntryKind::File {
                meta.len()
            } else {
                0
            },
            chunks: Vec::new(),
            target: (kind == EntryKind::Symlink)
                .then(|| {
                    std::fs::read_link(&path)
                        .ok()
                        .map(|t| t.to_string_lossy().into_owned())
                })
                .flatten(),
        });
        if kind == EntryKind::Directory {
            walk(root, &path, entries)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Bytes of chunks under a directory store.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_chunk_repeated_within_one_batch_is_stored_once_and_no_temporary_names_remain() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        // Three identical chunks in one file, and the same again in another: one batch.
        write(&source.join("zeros-1"), &vec![0u8; 3 * CHUNK_SIZE]);
        write(&source.join("zeros-2"), &vec![0u8; 3 * CHUNK_SIZE]);
        let root = dir.path().join("store");
        let store = ChunkStore::new(Box::new(DirectoryStore::new(root.clone())));
        store.capture("snap", &source, &|_, _| {}).await.unwrap();
        let mut keys = Vec::new();
        collect(&root, &root.join("chunks"), &mut keys).unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(!keys[0].contains(".tmp"));
        let restored = dir.path().join("restored");
        store
            .materialize("snap", &restored, Persist::Durable, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(restored.join("zeros-2")).unwrap(),
            vec![0u8; 3 * CHUNK_SIZE]
        );
    }

    fn stored_bytes(root: &Path) -> u64 {
        let mut keys = Vec::new();
        collect(root, &root.join("chunks"), &mut keys).unwrap();
        keys.iter()
            .map(|key| std::fs::metadata(root.join(key)).unwrap().len())
            .sum()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn captures_dedupes_restores_and_collects() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let big: Vec<u8> = (0..(3 * CHUNK_SIZE + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        write(&source.join("a/big"), &big);
        write(&source.join("small"), b"hello");
        std::os::unix::fs::symlink("small", source.join("link")).unwrap();
        let store = ChunkStore::new(Box::new(DirectoryStore::new(dir.path().join("store"))));

        store.capture("snap-1", &source, &|_, _| {}).await.unwrap();
        let after_one = stored_bytes(&dir.path().join("store"));
        // One chunk of the big file changes; the second snapshot adds only that chunk.
        let mut changed = big.clone();
        changed[CHUNK_SIZE + 5] ^= 1;
        write(&source.join("a/big"), &changed);
        store.capture("snap-2", &source, &|_, _| {}).await.unwrap();
        let after_two = stored_bytes(&dir.path().join("store"));
        assert_eq!(after_two - after_one, CHUNK_SIZE as u64);

        let restored = dir.path().join("restored");
        store
            .materialize("snap-1", &restored, Persist::Durable, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read(restored.join("a/big")).unwrap(), big);
        assert_eq!(std::fs::read(restored.join("small")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(restored.join("link")).unwrap(),
            Path::new("small")
        );

        store.delete_manifest("snap-1").unwrap();
        assert_eq!(store.collect_garbage().await.unwrap(), 1);
        let again = dir.path().join("again");
        store
            .materialize("snap-2", &again, Persist::Scratch, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read(again.join("a/big")).unwrap(), changed);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn damaged_chunks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        write(&source.join("f"), b"precious");
        let store_root = dir.path().join("store");
        let store = ChunkStore::new(Box::new(DirectoryStore::new(store_root.clone())));
        let manifest = store.capture("s", &source, &|_, _| {}).await.unwrap();
        let hash = &manifest.entries[0].chunks[0];
        std::fs::write(store_root.join(chunk_key(hash)), b"tampered").unwrap();
        assert!(
            store
                .materialize("s", &dir.path().join("out"), Persist::Durable, &|_, _| {})
                .await
                .is_err()
        );
    }
}
