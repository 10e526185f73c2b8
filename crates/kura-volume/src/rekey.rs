//! Copying a tree of files into a volume without mounting anything: the re-encryption a
//! snapshot copy under another KMS key needs, and the encryption of a plain image into a
//! new volume.
//!
//! The source is either plain files or another volume's backing directory with its key;
//! the target is a volume created with [`crate::Volume::create`]. Names, contents and
//! symbolic-link targets are decrypted with the source's keys and encrypted afresh with
//! the target's: new directory ids, new file ids, fresh nonces — nothing of the source's
//! ciphertext or key survives in the target. Owners, modes, modification times and hard
//! links are kept; blocks of zeros become holes.
//!
//! Working on the backing files directly (not through two FUSE mounts) keeps plaintext
//! out of any page cache, runs at the speed of AES and the disk, and cannot leave a
//! process hanging on its own mount when it is killed.
//!
//! **Resuming.** Every file is written under a temporary name and renamed into place
//! once complete, and every directory likewise once its id is written; so after an
//! interruption the target holds only complete entries, and calling [`copy_into_volume`]
//! again with the same source and target skips them. Nothing here is fsync'd: the
//! caller makes the result durable (or, as the database service does, copies it into
//! durable storage), and trusts a partial target only within the same boot of the
//! machine, since page-cache contents survive a killed process but not a power loss.
//!
//! Must not: call the KMS (keys come in as plaintext from the caller) or touch a mounted
//! volume's files.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kura_crypto::SecretBytes;
use kura_crypto::volume::{ID_LEN, VolumeCipher};

use crate::content::{Content, ContentError, FileState};
use crate::format::{self, BLOCK};
use crate::meta::DATA_DIR;
use crate::names::{self, EntryKind, TMP_PREFIX};
use crate::{Volume, VolumeError};

/// Plaintext bytes read and written per step (whole blocks, so writes need no reads).
const CHUNK: usize = 256 * BLOCK as usize;

/// Where the files to copy come from.
pub enum CopySource<'a> {
    /// An ordinary directory tree.
    Plain(&'a Path),
    /// A volume's backing directory (as created by [`Volume::create`]) and its key.
    Volume {
        backing_dir: &'a Path,
        key: SecretBytes,
    },
}

/// Copies every file of `source` into the volume `target`, under its plaintext `key`.
/// `progress(done, total)` is called as plaintext bytes are copied. Entries already
/// complete in the target (left by an interrupted earlier call) are kept and counted as
/// done.
pub fn copy_into_volume(
    source: CopySource<'_>,
    target: &Volume,
    key: SecretBytes,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), VolumeError> {
    target.check_key(&key)?;
    let target_cipher = cipher(key)?;
    let (source_root, source_cipher) = match source {
        CopySource::Plain(root) => (root.to_path_buf(), None),
        CopySource::Volume { backing_dir, key } => {
            Volume::open(backing_dir)?.check_key(&key)?;
            (backing_dir.join(DATA_DIR), Some(cipher(key)?))
        }
    };
    let source = SourceTree {
        cipher: source_cipher.as_ref(),
    };
    let mut survey = Survey::default();
    source.survey(&source_root, &mut Vec::new(), &mut survey)?;
    let target_root = target.backing_dir().join(DATA_DIR);
    let mut copy = TreeCopy {
        source,
        target: &target_cipher,
        target_root: target_root.clone(),
        names_of: survey.names_of,
        linked: HashMap::new(),
        done: 0,
        total: survey.bytes,
        progress,
    };
    let root_id = read_dir_id(&target_root)?;
    copy.directory(&source_root, &target_root, &root_id)
}

fn cipher(key: SecretBytes) -> Result<VolumeCipher, VolumeError> {
    VolumeCipher::new(&key).map_err(|_| VolumeError::KeyLength)
}

fn io_error(path: &Path, action: &str) -> impl Fn(io::Error) -> VolumeError {
    let context = format!("{action} {}", path.display());
    move |e| VolumeError::io(context.clone(), e)
}

fn content_error(path: &Path) -> impl Fn(ContentError) -> VolumeError {
    let context = format!("re-encrypting {}", path.display());
    move |e| match e {
        ContentError::Io(e) => VolumeError::io(context.clone(), e),
        ContentError::Corrupt | ContentError::Crypto => VolumeError::Io {
            context: context.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "corrupt or tampered block"),
        },
    }
}

/// The source side: plain, or encrypted under `cipher`.
struct SourceTree<'a> {
    cipher: Option<&'a VolumeCipher>,
}

/// One entry of a source directory, by its plaintext name.
struct SourceEntry {
    name: Vec<u8>,
    path: PathBuf,
    meta: fs::Metadata,
}

impl SourceTree<'_> {
    /// The entries of `dir` with their plaintext names, sorted by name.
    fn entries(&self, dir: &Path) -> Result<Vec<SourceEntry>, VolumeError> {
        let dir_id = match self.cipher {
            Some(_) => match read_dir_id(dir) {
                Ok(id) => Some(id),
                // A directory a crash left without its id has no encrypted names.
                Err(_) if is_empty_but_internal(dir) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            },
            None => None,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir, "reading"))? {
            let entry = entry.map_err(io_error(dir, "reading"))?;
            let path = entry.path();
            let name = match (self.cipher, &dir_id) {
                (Some(cipher), Some(id)) => match self.plaintext_name(cipher, id, dir, &entry)? {
                    Some(name) => name,
                    None => continue,
                },
                _ => entry.file_name().as_bytes().to_vec(),
            };
            let meta = fs::symlink_metadata(&path).map_err(io_error(&path, "reading"))?;
            out.push(SourceEntry { name, path, meta });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Decrypts a backing entry's name; `None` for the volume's own entries.
    fn plaintext_name(
        &self,
        cipher: &VolumeCipher,
        dir_id: &[u8; ID_LEN],
        dir: &Path,
        entry: &fs::DirEntry,
    ) -> Result<Option<Vec<u8>>, VolumeError> {
        let raw = entry.file_name();
        let Some(raw) = raw.to_str() else {
            return Ok(None);
        };
        let full = match names::classify(raw) {
            EntryKind::Internal => return Ok(None),
            EntryKind::Encrypted(name) => name.to_owned(),
            EntryKind::Long(hashed) => {
                let sidecar = dir.join(format!("{hashed}{}", names::LONG_SIDECAR_SUFFIX));
                let full = read_small(&sidecar)?;
                if !names::sidecar_matches(hashed, &full) {
                    return Err(corrupt(&sidecar));
                }
                full
            }
        };
        names::decode(cipher, dir_id, &full)
            .map(Some)
            .map_err(|_| corrupt(&entry.path()))
    }

    /// Adds what is under `dir` (plaintext path `at` from the root) to `survey`.
    fn survey(
        &self,
        dir: &Path,
        at: &mut Vec<Vec<u8>>,
        survey: &mut Survey,
    ) -> Result<(), VolumeError> {
        for entry in self.entries(dir)? {
            at.push(entry.name.clone());
            if entry.meta.is_dir() {
                self.survey(&entry.path, at, survey)?;
            } else if entry.meta.is_file() {
                survey.bytes += self
                    .file_size(&entry.meta)
                    .map_err(|_| corrupt(&entry.path))?;
                if entry.meta.nlink() > 1 {
                    let inode = (entry.meta.dev(), entry.meta.ino());
                    survey.names_of.entry(inode).or_default().push(at.clone());
                }
            }
            at.pop();
        }
        Ok(())
    }

    fn file_size(&self, meta: &fs::Metadata) -> Result<u64, format::Corrupt> {
        match self.cipher {
            Some(_) => format::plaintext_size(meta.len()),
            None => Ok(meta.len()),
        }
    }

    /// A symbolic link's plaintext target.
    fn link_target(&self, path: &Path) -> Result<Vec<u8>, VolumeError> {
        let stored = fs::read_link(path).map_err(io_error(path, "reading"))?;
        let Some(cipher) = self.cipher else {
            return Ok(stored.as_os_str().as_bytes().to_vec());
        };
        URL_SAFE_NO_PAD
            .decode(stored.as_os_str().as_bytes())
            .ok()
            .and_then(|bytes| cipher.decrypt_link(&bytes).ok())
            .ok_or_else(|| corrupt(path))
    }
}

/// What a first walk of the source finds.
#[derive(Default)]
struct Survey {
    /// Plaintext bytes in regular files.
    bytes: u64,
    /// Files with several links: (device, inode) → their plaintext paths.
    names_of: HashMap<(u64, u64), Vec<Vec<Vec<u8>>>>,
}

/// The copy in progress.
struct TreeCopy<'a> {
    source: SourceTree<'a>,
    target: &'a VolumeCipher,
    target_root: PathBuf,
    /// Files with several links: (device, inode) → their plaintext paths.
    names_of: HashMap<(u64, u64), Vec<Vec<Vec<u8>>>>,
    /// Files with several links: (device, inode) → a complete target path.
    linked: HashMap<(u64, u64), PathBuf>,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl TreeCopy<'_> {
    /// Copies the entries of source directory `from` into target directory `to`.
    fn directory(
        &mut self,
        from: &Path,
        to: &Path,
        to_id: &[u8; ID_LEN],
    ) -> Result<(), VolumeError> {
        remove_temporaries(to)?;
        for entry in self.source.entries(from)? {
            let name =
                names::encode(self.target, to_id, &entry.name).map_err(|_| corrupt(&entry.path))?;
            let target = to.join(name.entry());
            if let Some(sidecar) = name.sidecar() {
                write_new(&to.join(sidecar), name.full().as_bytes(), 0o644)?;
            }
            let kind = entry.meta.file_type();
            if kind.is_dir() {
                let id = match read_dir_id(&target) {
                    Ok(id) => id,
                    Err(_) => create_dir(to, &target)?,
                };
                self.directory(&entry.path, &target, &id)?;
                keep_owner_mode_and_time(&entry.meta, &target)?;
            } else if kind.is_symlink() {
                if fs::symlink_metadata(&target).is_err() {
                    self.symlink(&entry, to, &target)?;
                }
            } else if kind.is_file() {
                self.file(&entry, to, &target)?;
            } else {
                // Sockets and pipes belong to a running engine, not to its data.
                tracing::debug!(path = %entry.path.display(), "special file not copied");
            }
        }
        Ok(())
    }

    /// Copies one symbolic link: under a temporary name, renamed into place when owned.
    fn symlink(&self, entry: &SourceEntry, dir: &Path, target: &Path) -> Result<(), VolumeError> {
        let plain = self.source.link_target(&entry.path)?;
        let sealed = self
            .target
            .encrypt_link(&plain)
            .map_err(|_| VolumeError::Crypto)?;
        let temporary = temporary_in(dir);
        std::os::unix::fs::symlink(URL_SAFE_NO_PAD.encode(sealed), &temporary)
            .map_err(io_error(&temporary, "creating"))?;
        std::os::unix::fs::lchown(&temporary, Some(entry.meta.uid()), Some(entry.meta.gid()))
            .map_err(io_error(&temporary, "setting the owner of"))?;
        fs::rename(&temporary, target).map_err(io_error(target, "renaming into"))
    }

    /// Copies one regular file: under a temporary name, renamed into place when complete.
    fn file(&mut self, entry: &SourceEntry, dir: &Path, target: &Path) -> Result<(), VolumeError> {
        let size = self
            .source
            .file_size(&entry.meta)
            .map_err(|_| corrupt(&entry.path))?;
        let inode = (entry.meta.dev(), entry.meta.ino());
        if fs::symlink_metadata(target).is_ok() {
            // Complete from an earlier, interrupted copy.
            self.advance(size);
            return Ok(());
        }
        if entry.meta.nlink() > 1
            && let Some(first) = self.complete_link(inode)
        {
            fs::hard_link(&first, target).map_err(io_error(target, "linking"))?;
            self.advance(size);
            return Ok(());
        }
        let temporary = temporary_in(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
            .map_err(io_error(&temporary, "creating"))?;
        self.contents(&entry.path, size, &file)?;
        keep_owner_mode_and_time(&entry.meta, &temporary)?;
        drop(file);
        fs::rename(&temporary, target).map_err(io_error(target, "renaming into"))?;
        if entry.meta.nlink() > 1 {
            self.linked.insert(inode, target.to_owned());
        }
        Ok(())
    }

    /// A complete target file for another name of the source file `inode`: one made in
    /// this call, or, after an interruption, one an earlier call made under any of its
    /// names (so that a resumed copy keeps the names linked).
    fn complete_link(&mut self, inode: (u64, u64)) -> Option<PathBuf> {
        if let Some(first) = self.linked.get(&inode) {
            return Some(first.clone());
        }
        let found = self
            .names_of
            .get(&inode)?
            .iter()
            .find_map(|names| self.target_path(names))?;
        self.linked.insert(inode, found.clone());
        Some(found)
    }

    /// The target path of the plaintext path `names`, if it exists as a regular file.
    fn target_path(&self, names: &[Vec<u8>]) -> Option<PathBuf> {
        let mut path = self.target_root.clone();
        for name in names {
            let id = read_dir_id(&path).ok()?;
            let encoded = names::encode(self.target, &id, name).ok()?;
            path.push(encoded.entry());
        }
        fs::symlink_metadata(&path)
            .ok()
            .filter(fs::Metadata::is_file)
            .map(|_| path)
    }

    /// Writes the plaintext of `from` (`size` bytes) into the empty target `file`.
    fn contents(&mut self, from: &Path, size: u64, file: &File) -> Result<(), VolumeError> {
        let source_file = File::open(from).map_err(io_error(from, "opening"))?;
        let reader = self.source.cipher.map(|cipher| Content {
            cipher,
            file: &source_file,
            journal: None,
        });
        let source_state = match &reader {
            Some(_) => Some(FileState::load(&source_file).map_err(content_error(from))?),
            None => None,
        };
        let writer = Content {
            cipher: self.target,
            file,
            journal: None,
        };
        let mut state = FileState { size: 0, id: None };
        let mut plain = Vec::with_capacity(CHUNK);
        let mut offset = 0u64;
        while offset < size {
            let len = CHUNK.min(usize::try_from(size - offset).unwrap_or(CHUNK));
            match (&reader, &source_state) {
                (Some(reader), Some(st)) => {
                    plain = reader.read(st, offset, len).map_err(content_error(from))?;
                }
                _ => {
                    plain.resize(len, 0);
                    std::os::unix::fs::FileExt::read_exact_at(&source_file, &mut plain, offset)
                        .map_err(io_error(from, "reading"))?;
                }
            }
            if plain.len() != len {
                return Err(corrupt(from));
            }
            for (start, run) in nonzero_runs(&plain) {
                writer
                    .write(&mut state, offset + start as u64, run)
                    .map_err(content_error(from))?;
            }
            offset += len as u64;
            self.advance(len as u64);
        }
        writer
            .truncate(&mut state, size)
            .map_err(content_error(from))
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        (self.progress)(self.done, self.total);
    }
}

/// The runs of whole blocks of `plain` that are not all zeros, with their offsets: blocks
/// of zeros need no encryption and stay (or become) holes.
fn nonzero_runs(plain: &[u8]) -> Vec<(usize, &[u8])> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, block) in plain.chunks(BLOCK as usize).enumerate() {
        let at = i * BLOCK as usize;
        match (format::is_zero(block), start) {
            (false, None) => start = Some(at),
            (true, Some(from)) => {
                runs.push((from, &plain[from..at]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        runs.push((from, &plain[from..]));
    }
    runs
}

fn corrupt(path: &Path) -> VolumeError {
    VolumeError::Io {
        context: format!("re-encrypting {}", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidData, "corrupt or tampered entry"),
    }
}

fn read_dir_id(dir: &Path) -> Result<[u8; ID_LEN], VolumeError> {
    let path = dir.join(names::DIR_ID_FILE);
    let mut id = [0u8; ID_LEN];
    File::open(&path)
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(io_error(&path, "reading"))?;
    Ok(id)
}

/// True if `dir` holds nothing but the volume's own entries.
fn is_empty_but_internal(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).all(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| names::classify(n) == EntryKind::Internal)
        })
    })
}

/// Creates `target` in `parent` with a fresh id, under a temporary name first so that an
/// interruption never leaves a directory without its id.
fn create_dir(parent: &Path, target: &Path) -> Result<[u8; ID_LEN], VolumeError> {
    let temporary = temporary_in(parent);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&temporary)
        .map_err(io_error(&temporary, "creating"))?;
    let mut id = [0u8; ID_LEN];
    kura_crypto::fill_random(&mut id).map_err(|_| VolumeError::Crypto)?;
    write_new(&temporary.join(names::DIR_ID_FILE), &id, 0o644)?;
    fs::rename(&temporary, target).map_err(io_error(target, "renaming into"))?;
    Ok(id)
}

/// A fresh temporary name in `dir` (removed by [`remove_temporaries`] if left behind).
fn temporary_in(dir: &Path) -> PathBuf {
    dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()))
}

/// Removes what an interrupted copy left under temporary names in `dir`.
fn remove_temporaries(dir: &Path) -> Result<(), VolumeError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir, "reading"))? {
        let entry = entry.map_err(io_error(dir, "reading"))?;
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
        {
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_error(&path, "removing"))?;
        }
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), VolumeError> {
    use std::io::Write as _;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_error(path, "writing"))
}

fn read_small(path: &Path) -> Result<String, VolumeError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(io_error(path, "reading"))?;
    Ok(text)
}

/// Gives `path` the owner, permissions and modification time of the source entry.
fn keep_owner_mode_and_time(meta: &fs::Metadata, path: &Path) -> Result<(), VolumeError> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_error(path, "setting the owner of"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_error(path, "setting the mode of"))?;
    let modified = meta
        .modified()
        .map_err(io_error(path, "reading the time of"))?;
    File::open(path)
        .and_then(|f| f.set_modified(modified))
        .map_err(io_error(path, "setting the time of"))
}
