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

/// The narrow seam to where chunks and manifests live.
pub(crate) trait ObjectStore: Send + Sync {
    /// Stores `bytes` under `key` unless it exists; returns whether it wrote.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool>;
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
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        if self.path(key).exists() {
            return Ok(false);
        }
        self.put(key, bytes)?;
        Ok(true)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
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
    pub async fn capture(
        &self,
        id: &str,
        root: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<Manifest> {
        let _shared = self.gc.read().await;
        let mut entries = Vec::new();
        walk(root, root, &mut entries)?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let mut done = 0u64;
        let mut buffer = vec![0u8; CHUNK_SIZE];
        for entry in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
            let mut file = std::fs::File::open(root.join(&entry.path))?;
            loop {
                let read = read_full(&mut file, &mut buffer)?;
                if read == 0 {
                    break;
                }
                let chunk = buffer.get(..read).unwrap_or_default();
                let hash = kura_crypto::sha256_hex(chunk);
                self.objects.put_if_absent(&chunk_key(&hash), chunk)?;
                entry.chunks.push(hash);
                done += read as u64;
                progress(done, total);
            }
        }
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
    /// reporting progress in bytes.
    pub async fn materialize(
        &self,
        id: &str,
        target: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> io::Result<()> {
        let _shared = self.gc.read().await;
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
                    file.sync_all()?;
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
        Ok(())
    }

    pub fn delete_manifest(&self, id: &str) -> io::Result<()> {
        self.objects.delete(&manifest_key(id))
    }

    /// Removes chunks no manifest names any more. Returns how many it removed.
    pub async fn collect_garbage(&self) -> io::Result<usize> {
        let _exclusive = self.gc.write().await;
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
    fn stored_bytes(root: &Path) -> u64 {
        let mut keys = Vec::new();
        collect(root, &root.join("chunks"), &mut keys).unwrap();
        keys.iter()
            .map(|key| std::fs::metadata(root.join(key)).unwrap().len())
            .sum()
    }

    #[tokio::test]
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
            .materialize("snap-1", &restored, &|_, _| {})
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
            .materialize("snap-2", &again, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read(again.join("a/big")).unwrap(), changed);
    }

    #[tokio::test]
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
                .materialize("s", &dir.path().join("out"), &|_, _| {})
                .await
                .is_err()
        );
    }
}
