//! The FUSE file system: plaintext view on top, encrypted backing directory below.
//!
//! Inodes are the backing files' inodes (the FUSE inode number is the backing `st_ino`,
//! except the root, which FUSE calls 1). For each inode the kernel remembers, the volume
//! keeps an `O_PATH` descriptor (so renames of it or of its parents need no bookkeeping)
//! and, for regular files, one read-write descriptor shared by every open of that file,
//! with the file's plaintext size and id cached under a lock.
//!
//! Every operation takes the cipher first: while the volume is locked there is none, and
//! the operation fails at once with EIO (nothing ever waits for a key). Mutating
//! operations also pass the freeze gate, which holds them while a freeze is in effect.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use kura_crypto::volume::{ID_LEN, VolumeCipher};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::content::{Content, FileState};
use crate::format;
use crate::journal::Journal;
use crate::names::{self, BackingName, EntryKind};

type R<T> = Result<T, Errno>;

fn ex(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn io_ex(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Tunables of the file system (set from `MountOptions`).
#[derive(Debug, Clone)]
pub(crate) struct FsOptions {
    pub attr_ttl: Duration,
    pub writeback_cache: bool,
    pub max_write: u32,
    pub journal: bool,
}

/// Counters reported by `status`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
}

/// Holds mutating operations while the volume is frozen.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    frozen: bool,
    active: usize,
}

pub(crate) struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.active -= 1;
        if s.active == 0 {
            self.0.cv.notify_all();
        }
    }
}

impl Gate {
    fn enter(&self, locked: &AtomicBool) -> R<Pass<'_>> {
        let mut s = self.state.lock();
        loop {
            if locked.load(Ordering::Acquire) {
                return Err(Errno::EIO);
            }
            if !s.frozen {
                s.active += 1;
                return Ok(Pass(self));
            }
            self.cv.wait(&mut s);
        }
    }

    /// Blocks new mutations and waits for those in flight.
    pub fn freeze(&self) {
        let mut s = self.state.lock();
        while s.frozen {
            self.cv.wait(&mut s);
        }
        s.frozen = true;
        while s.active > 0 {
            self.cv.wait(&mut s);
        }
    }

    pub fn thaw(&self) {
        let mut s = self.state.lock();
        s.frozen = false;
        self.cv.notify_all();
    }

    pub fn is_frozen(&self) -> bool {
        self.state.lock().frozen
    }

    /// Wakes waiting writers so they can notice the volume was locked.
    pub fn wake(&self) {
        let _s = self.state.lock();
        self.cv.notify_all();
    }
}

#[derive(Debug, Default)]
pub(crate) struct FileSlot {
    rw: Option<File>,
    state: Option<FileState>,
}

pub(crate) struct Inode {
    ino: u64,
    kind: FileType,
    /// `O_PATH | O_NOFOLLOW` descriptor of the backing inode.
    fd: OwnedFd,
    lookups: AtomicU64,
    dir_id: Mutex<Option<[u8; ID_LEN]>>,
    file: RwLock<FileSlot>,
}

impl Inode {
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

pub(crate) struct Shared {
    root: Arc<Inode>,
    root_backing_ino: u64,
    root_dev: u64,
    inodes: RwLock<HashMap<u64, Arc<Inode>>>,
    keys: RwLock<Option<Arc<VolumeCipher>>>,
    pub locked: AtomicBool,
    pub gate: Gate,
    journal: Journal,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    pub notifier: OnceLock<Notifier>,
    pub stats: Stats,
    options: FsOptions,
}

impl Shared {
    pub fn new(
        data_root: &Path,
        journal: Journal,
        cipher: VolumeCipher,
        options: FsOptions,
    ) -> io::Result<Arc<Self>> {
        let fd = nix::fcntl::open(
            data_root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
        let root = Arc::new(Inode {
            ino: INodeNo::ROOT.0,
            kind: FileType::Directory,
            fd,
            lookups: AtomicU64::new(1),
            dir_id: Mutex::new(None),
            file: RwLock::new(FileSlot::default()),
        });
        let mut inodes = HashMap::new();
        inodes.insert(INodeNo::ROOT.0, root.clone());
        Ok(Arc::new(Self {
            root,
            root_backing_ino: st.st_ino,
            root_dev: st.st_dev,
            inodes: RwLock::new(inodes),
            keys: RwLock::new(Some(Arc::new(cipher))),
            locked: AtomicBool::new(false),
            gate: Gate::default(),
            journal,
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier: OnceLock::new(),
            stats: Stats::default(),
            options,
        }))
    }

    /// The cipher, or EIO at once when locked.
    fn cipher(&self) -> R<Arc<VolumeCipher>> {
        if let Some(c) = self.keys.read().as_ref() {
            return Ok(c.clone());
        }
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        Err(Errno::EIO)
    }

    fn journal(&self) -> Option<&Journal> {
        self.options.journal.then_some(&self.journal)
    }

    fn pass(&self) -> R<Pass<'_>> {
        self.gate.enter(&self.locked).inspect_err(|_| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Drops the keys: every operation from now on fails with EIO; waits (briefly) for
    /// operations that still hold the cipher, then empties the kernel's caches of
    /// plaintext pages for every inode.
    pub fn lock(&self) {
        self.locked.store(true, Ordering::SeqCst);
        let old = self.keys.write().take();
        self.gate.wake();
        if let Some(old) = old {
            let weak = Arc::downgrade(&old);
            drop(old);
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.invalidate_kernel_caches();
    }

    pub fn unlock(&self, cipher: VolumeCipher) {
        *self.keys.write() = Some(Arc::new(cipher));
        self.locked.store(false, Ordering::SeqCst);
    }

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Acquire)
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.read().len()
    }

    fn invalidate_kernel_caches(&self) {
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let inos: Vec<u64> = self.inodes.read().keys().copied().collect();
        for ino in inos {
            // Drops cached pages (and attributes). ENOENT: the kernel forgot it already.
            let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
        }
    }

    fn get(&self, ino: INodeNo) -> R<Arc<Inode>> {
        self.inodes.read().get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn fuse_ino(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_backing_ino {
            INodeNo::ROOT.0
        } else {
            backing_ino
        }
    }

    /// Registers one more kernel reference to the inode behind `fd`.
    fn intern(&self, fd: OwnedFd, st: &FileStat) -> R<Arc<Inode>> {
        if st.st_dev != self.root_dev {
            // Another file system mounted inside the backing tree: inode numbers would clash.
            return Err(Errno::EXDEV);
        }
        let ino = self.fuse_ino(st.st_ino);
        if ino == INodeNo::ROOT.0 && st.st_ino != self.root_backing_ino {
            return Err(Errno::EIO);
        }
        let mut map = self.inodes.write();
        if let Some(existing) = map.get(&ino) {
            existing.lookups.fetch_add(1, Ordering::Relaxed);
            return Ok(existing.clone());
        }
        let inode = Arc::new(Inode {
            ino,
            kind: kind_of(st.st_mode),
            fd,
            lookups: AtomicU64::new(1),
            dir_id: Mutex::new(None),
            file: RwLock::new(FileSlot::default()),
        });
        map.insert(ino, inode.clone());
        Ok(inode)
    }

    fn forget(&self, ino: u64, n: u64) {
        if ino == INodeNo::ROOT.0 {
            return;
        }
        let mut map = self.inodes.write();
        // Lookup counts change only under the map's write lock (here and in `intern`).
        if let Some(inode) = map.get(&ino) {
            let left = inode.lookups.load(Ordering::Relaxed).saturating_sub(n);
            inode.lookups.store(left, Ordering::Relaxed);
            if left == 0 {
                map.remove(&ino);
            }
        }
    }

    /// The directory's id, read from `.kura-dirid` once.
    fn dir_id(&self, dir: &Inode) -> R<[u8; ID_LEN]> {
        if dir.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let mut cached = dir.dir_id.lock();
        if let Some(id) = *cached {
            return Ok(id);
        }
        let id = match read_dir_id(&dir.fd) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && dir_is_empty(&dir.fd) => {
                // An empty directory without an id: a crash in the middle of rmdir.
                // Give it a new one (it has no names that depend on the old).
                tracing::warn!(ino = dir.ino, "directory without an id; creating one");
                write_dir_id_at(&dir.fd).map_err(|e| io_ex(&e))?
            }
            Err(e) => {
                tracing::error!(ino = dir.ino, "cannot read directory id: {e}");
                return Err(Errno::EIO);
            }
        };
        *cached = Some(id);
        Ok(id)
    }

    fn backing_name(&self, cipher: &VolumeCipher, dir: &Inode, name: &OsStr) -> R<BackingName> {
        let id = self.dir_id(dir)?;
        names::encode(cipher, &id, name.as_bytes()).map_err(|e| match e {
            names::NameError::TooLong => Errno::ENAMETOOLONG,
            names::NameError::Invalid => Errno::EINVAL,
            names::NameError::Authentication => Errno::EIO,
        })
    }

    /// Writes a long name's sidecar before its entry is created or renamed into place.
    fn write_sidecar(&self, dir: &Inode, name: &BackingName) -> R<()> {
        let Some(sidecar) = name.sidecar() else {
            return Ok(());
        };
        let fd = nix::fcntl::openat(
            &dir.fd,
            sidecar.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_CLOEXEC
                | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(ex)?;
        let mut file = File::from(fd);
        file.write_all(name.full().as_bytes())
            .map_err(|e| io_ex(&e))
    }

    fn remove_sidecar(&self, dir: &Inode, name: &BackingName) {
        if let Some(sidecar) = name.sidecar() {
            let _ = nix::unistd::unlinkat(
                &dir.fd,
                sidecar.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }

    /// Looks up `entry` in `dir` and registers the inode.
    fn lookup_entry(&self, dir: &Inode, entry: &str) -> R<(Arc<Inode>, FileAttr)> {
        let fd = nix::fcntl::openat(
            &dir.fd,
            entry,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(ex)?;
        let st = nix::sys::stat::fstat(&fd).map_err(ex)?;
        let inode = self.intern(fd, &st)?;
        let attr = self.attr(&inode, &st);
        Ok((inode, attr))
    }

    fn stat(&self, inode: &Inode) -> R<FileAttr> {
        let st = nix::sys::stat::fstat(&inode.fd).map_err(ex)?;
        Ok(self.attr(inode, &st))
    }

    fn attr(&self, inode: &Inode, st: &FileStat) -> FileAttr {
        let kind = kind_of(st.st_mode);
        let backing = u64::try_from(st.st_size).unwrap_or(0);
        let size = match kind {
            FileType::RegularFile => inode
                .file
                .try_read()
                .and_then(|slot| slot.state.map(|s| s.size))
                .unwrap_or_else(|| format::plaintext_size(backing).unwrap_or(0)),
            FileType::Symlink => link_plain_len(backing),
            _ => backing,
        };
        FileAttr {
            ino: INodeNo(inode.ino),
            size,
            blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            atime: system_time(st.st_atime, st.st_atime_nsec),
            mtime: system_time(st.st_mtime, st.st_mtime_nsec),
            ctime: system_time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind,
            perm: u16::try_from(st.st_mode & 0o7777).unwrap_or(0),
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: u32::try_from(st.st_rdev).unwrap_or(0),
            blksize: 4096,
            flags: 0,
        }
    }

    /// The owner a new entry in `dir` gets: the caller, with the directory's group if the
    /// directory is set-group-id (as Linux file systems do).
    fn new_owner(&self, req: &Request, dir: &Inode) -> R<(u32, u32, bool)> {
        let st = nix::sys::stat::fstat(&dir.fd).map_err(ex)?;
        let setgid = st.st_mode & libc::S_ISGID != 0;
        Ok((
            req.uid(),
            if setgid { st.st_gid } else { req.gid() },
            setgid,
        ))
    }

    /// Opens the inode's shared read-write descriptor and loads its state, once.
    fn with_file<T>(
        &self,
        inode: &Inode,
        f: impl FnOnce(&File, &FileState) -> Result<T, crate::content::ContentError>,
    ) -> R<T> {
        {
            let slot = inode.file.read();
            if let (Some(rw), Some(st)) = (slot.rw.as_ref(), slot.state.as_ref()) {
                return f(rw, st).map_err(|e| content_errno(&e));
            }
        }
        self.with_file_mut(inode, |rw, st| f(rw, st))
    }

    fn with_file_mut<T>(
        &self,
        inode: &Inode,
        f: impl FnOnce(&File, &mut FileState) -> Result<T, crate::content::ContentError>,
    ) -> R<T> {
        if inode.kind != FileType::RegularFile {
            return Err(if inode.kind == FileType::Directory {
                Errno::EISDIR
            } else {
                Errno::EINVAL
            });
        }
        let mut slot = inode.file.write();
        if slot.rw.is_none() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags_cloexec()
                .open(inode.proc_path())
                .map_err(|e| io_ex(&e))?;
            slot.rw = Some(file);
        }
        let FileSlot { rw, state } = &mut *slot;
        let rw = rw.as_ref().ok_or(Errno::EIO)?;
        if state.is_none() {
            *state = Some(FileState::load(rw).map_err(|e| content_errno(&e))?);
        }
        let st = state.as_mut().ok_or(Errno::EIO)?;
        f(rw, st).map_err(|e| content_errno(&e))
    }

    fn ensure_open(&self, inode: &Inode) -> R<()> {
        self.with_file(inode, |_, _| Ok(()))
    }

    fn read_dir(&self, cipher: &VolumeCipher, dir: &Inode) -> R<Vec<DirEntry>> {
        let id = self.dir_id(dir)?;
        let mut d = nix::dir::Dir::openat(
            &dir.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(ex)?;
        let mut out = vec![
            DirEntry {
                ino: dir.ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: INodeNo::ROOT.0,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for entry in d.iter() {
            let entry = entry.map_err(ex)?;
            let Ok(raw) = entry.file_name().to_str() else {
                continue;
            };
            let full = match names::classify(raw) {
                EntryKind::Internal => continue,
                EntryKind::Encrypted(full) => full.to_owned(),
                EntryKind::Long(hashed) => match read_sidecar(&dir.fd, hashed) {
                    Some(full) if names::sidecar_matches(hashed, &full) => full,
                    _ => {
                        tracing::warn!(entry = raw, "long name without a valid sidecar; skipped");
                        continue;
                    }
                },
            };
            let name = match names::decode(cipher, &id, &full) {
                Ok(name) => name,
                Err(_) => {
                    tracing::warn!(entry = raw, "name failed authentication; skipped");
                    continue;
                }
            };
            let kind = match entry.file_type() {
                Some(t) => type_of(t),
                None => nix::sys::stat::fstatat(&dir.fd, raw, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| kind_of(st.st_mode))
                    .unwrap_or(FileType::RegularFile),
            };
            out.push(DirEntry {
                ino: self.fuse_ino(entry.ino()),
                kind,
                name: OsString::from_vec(name),
            });
        }
        Ok(out)
    }
}

fn content_errno(e: &crate::content::ContentError) -> Errno {
    Errno::from_i32(e.errno())
}

trait CloexecExt {
    fn custom_flags_cloexec(&mut self) -> &mut Self;
}

impl CloexecExt for std::fs::OpenOptions {
    fn custom_flags_cloexec(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.custom_flags(libc::O_CLOEXEC)
    }
}

/// How the kernel caches an open file. A file opened with `O_SYNC` or `O_DSYNC` (a
/// database's log, with `wal_sync_method = open_datasync` or InnoDB's `O_DSYNC`) is
/// written through: every write reaches the volume at once, so a commit is one WRITE
/// and one FSYNC with nothing to wait for in the kernel's writeback cache (pages under
/// writeback that the next commit rewrites, and the file-time updates the cache sends
/// before each FSYNC). Other files keep the page cache across opens.
fn open_mode(flags: i32) -> FopenFlags {
    if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

fn read_dir_id(dir: &OwnedFd) -> io::Result<[u8; ID_LEN]> {
    let fd = nix::fcntl::openat(
        dir,
        names::DIR_ID_FILE,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut id = [0u8; ID_LEN];
    File::from(fd).read_exact(&mut id)?;
    Ok(id)
}

fn write_dir_id_at(dir: &impl AsFd) -> io::Result<[u8; ID_LEN]> {
    let mut id = [0u8; ID_LEN];
    kura_crypto::fill_random(&mut id).map_err(|_| io::Error::other("random"))?;
    let fd = nix::fcntl::openat(
        dir,
        names::DIR_ID_FILE,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(&id)?;
    file.sync_all()?;
    Ok(id)
}

fn dir_is_empty(dir: &OwnedFd) -> bool {
    let Ok(mut d) = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    d.iter().filter_map(Result::ok).all(|e| {
        let n = e.file_name().to_bytes();
        n == b"." || n == b".."
    })
}

fn read_sidecar(dir: &OwnedFd, hashed: &str) -> Option<String> {
    let fd = nix::fcntl::openat(
        dir,
        format!("{hashed}{}", names::LONG_SIDECAR_SUFFIX).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .ok()?;
    let mut s = String::new();
    File::from(fd).take(4096).read_to_string(&mut s).ok()?;
    Some(s)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn type_of(t: nix::dir::Type) -> FileType {
    use nix::dir::Type;
    match t {
        Type::Directory => FileType::Directory,
        Type::Symlink => FileType::Symlink,
        Type::Fifo => FileType::NamedPipe,
        Type::Socket => FileType::Socket,
        Type::CharacterDevice => FileType::CharDevice,
        Type::BlockDevice => FileType::BlockDevice,
        Type::File => FileType::RegularFile,
    }
}

/// Plaintext length of a symlink target stored as base64url(nonce ‖ ct ‖ tag).
fn link_plain_len(encoded_len: u64) -> u64 {
    let decoded = encoded_len / 4 * 3
        + match encoded_len % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        };
    decoded.saturating_sub(format::OVERHEAD)
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

fn timespec(t: Option<TimeOrNow>) -> nix::sys::time::TimeSpec {
    use nix::sys::time::TimeSpec;
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::from_duration(d),
            Err(e) => {
                let d = e.duration();
                TimeSpec::new(
                    -i64::try_from(d.as_secs()).unwrap_or(0) - i64::from(d.subsec_nanos() > 0),
                    if d.subsec_nanos() > 0 {
                        1_000_000_000 - i64::from(d.subsec_nanos())
                    } else {
                        0
                    },
                )
            }
        },
    }
}

fn chown_at(fd: &impl AsFd, path: &str, uid: u32, gid: u32, flags: AtFlags) -> R<()> {
    nix::unistd::fchownat(
        fd,
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        flags,
    )
    .map_err(ex)
}

fn random_tmp_name() -> R<String> {
    let mut r = [0u8; 12];
    kura_crypto::fill_random(&mut r).map_err(|_| Errno::EIO)?;
    Ok(format!(
        "{}{}",
        names::TMP_PREFIX,
        URL_SAFE_NO_PAD.encode(r)
    ))
}

/// The FUSE side: a thin adapter from kernel requests to [`Shared`].
pub(crate) struct Fs {
    pub shared: Arc<Shared>,
}

impl Fs {
    fn ttl(&self) -> Duration {
        self.shared.options.attr_ttl
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        let s = &self.shared;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        Ok(s.lookup_entry(&dir, bn.entry())?.1)
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let inode = s.get(ino)?;
        let is_link = inode.kind == FileType::Symlink;
        if let Some(mode) = mode
            && !is_link
        {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                inode.proc_path().as_str(),
                Mode::from_bits_truncate(mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(ex)?;
        }
        if uid.is_some() || gid.is_some() {
            nix::unistd::fchownat(
                &inode.fd,
                "",
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(ex)?;
        }
        if let Some(size) = size {
            s.with_file_mut(&inode, |rw, st| {
                Content {
                    cipher: &cipher,
                    file: rw,
                    journal: s.journal(),
                }
                .truncate(st, size)
            })?;
        }
        if (atime.is_some() || mtime.is_some()) && !is_link {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                inode.proc_path().as_str(),
                &timespec(atime),
                &timespec(mtime),
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .map_err(ex)?;
        }
        s.stat(&inode)
    }

    fn do_readlink(&self, ino: INodeNo) -> R<Vec<u8>> {
        let s = &self.shared;
        let cipher = s.cipher()?;
        let inode = s.get(ino)?;
        let stored = nix::fcntl::readlinkat(&inode.fd, "").map_err(ex)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(stored.as_bytes())
            .map_err(|_| Errno::EIO)?;
        cipher.decrypt_link(&bytes).map_err(|_| Errno::EIO)
    }

    fn do_mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        let (uid, gid, _) = s.new_owner(req, &dir)?;
        let perm = Mode::from_bits_truncate(mode & !umask & 0o7777);
        s.write_sidecar(&dir, &bn)?;
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        if kind == SFlag::S_IFREG || kind.is_empty() {
            let fd = nix::fcntl::openat(
                &dir.fd,
                bn.entry(),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
                perm,
            )
            .map_err(ex)?;
            drop(fd);
        } else {
            nix::sys::stat::mknodat(&dir.fd, bn.entry(), kind, perm, u64::from(rdev))
                .map_err(ex)?;
        }
        nix::sys::stat::fchmodat(
            &dir.fd,
            bn.entry(),
            perm,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(ex)?;
        chown_at(&dir.fd, bn.entry(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        Ok(s.lookup_entry(&dir, bn.entry())?.1)
    }

    fn do_mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        let (uid, gid, setgid) = s.new_owner(req, &dir)?;
        let mut perm = mode & !umask & 0o7777;
        if setgid {
            perm |= libc::S_ISGID;
        }
        // Build the directory under a temporary name with its id in place, then rename it
        // into place: a crash never leaves a visible directory without an id.
        let tmp = random_tmp_name()?;
        nix::sys::stat::mkdirat(&dir.fd, tmp.as_str(), Mode::from_bits_truncate(0o700))
            .map_err(ex)?;
        let result = (|| -> R<()> {
            let tfd = nix::fcntl::openat(
                &dir.fd,
                tmp.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(ex)?;
            write_dir_id_at(&tfd).map_err(|e| io_ex(&e))?;
            nix::sys::stat::fchmod(&tfd, Mode::from_bits_truncate(perm)).map_err(ex)?;
            nix::unistd::fchown(
                &tfd,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(ex)?;
            s.write_sidecar(&dir, &bn)?;
            nix::fcntl::renameat2(
                &dir.fd,
                tmp.as_str(),
                &dir.fd,
                bn.entry(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(ex)
        })();
        if let Err(e) = result {
            let _ = remove_tmp_dir(&dir.fd, &tmp);
            return Err(e);
        }
        Ok(s.lookup_entry(&dir, bn.entry())?.1)
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> R<()> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        nix::unistd::unlinkat(&dir.fd, bn.entry(), nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(ex)?;
        s.remove_sidecar(&dir, &bn);
        Ok(())
    }

    fn do_rmdir(&self, parent: INodeNo, name: &OsStr) -> R<()> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        let victim = nix::fcntl::openat(
            &dir.fd,
            bn.entry(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(ex)?;
        // Empty means: nothing but the volume's own bookkeeping.
        let mut internal = Vec::new();
        {
            let mut d = nix::dir::Dir::openat(
                &victim,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(ex)?;
            for entry in d.iter() {
                let entry = entry.map_err(ex)?;
                let raw = entry.file_name().to_string_lossy().into_owned();
                if raw == "." || raw == ".." {
                    continue;
                }
                match names::classify(&raw) {
                    EntryKind::Internal => internal.push(raw),
                    _ => return Err(Errno::ENOTEMPTY),
                }
            }
        }
        // The id last: until then the directory stays usable if anything below fails.
        internal.sort_by_key(|n| n == names::DIR_ID_FILE);
        for raw in &internal {
            if raw.starts_with(names::TMP_PREFIX) {
                let _ = remove_tmp_dir(&victim, raw);
            } else {
                nix::unistd::unlinkat(
                    &victim,
                    raw.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(ex)?;
            }
        }
        nix::unistd::unlinkat(&dir.fd, bn.entry(), nix::unistd::UnlinkatFlags::RemoveDir)
            .map_err(ex)?;
        s.remove_sidecar(&dir, &bn);
        Ok(())
    }

    fn do_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
    ) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        let (uid, gid, _) = s.new_owner(req, &dir)?;
        let encrypted = cipher
            .encrypt_link(target.as_os_str().as_bytes())
            .map_err(|_| Errno::EIO)?;
        let stored = URL_SAFE_NO_PAD.encode(encrypted);
        if stored.len() >= 4096 {
            return Err(Errno::ENAMETOOLONG);
        }
        s.write_sidecar(&dir, &bn)?;
        nix::unistd::symlinkat(stored.as_str(), &dir.fd, bn.entry()).map_err(ex)?;
        chown_at(&dir.fd, bn.entry(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        Ok(s.lookup_entry(&dir, bn.entry())?.1)
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let from_dir = s.get(parent)?;
        let to_dir = s.get(newparent)?;
        let from = s.backing_name(&cipher, &from_dir, name)?;
        let to = s.backing_name(&cipher, &to_dir, newname)?;
        s.write_sidecar(&to_dir, &to)?;
        nix::fcntl::renameat2(
            &from_dir.fd,
            from.entry(),
            &to_dir.fd,
            to.entry(),
            nix::fcntl::RenameFlags::from_bits_retain(flags.bits()),
        )
        .map_err(ex)?;
        let same = from_dir.ino == to_dir.ino && from == to;
        if !same && !flags.contains(RenameFlags::RENAME_EXCHANGE) {
            s.remove_sidecar(&from_dir, &from);
        }
        Ok(())
    }

    fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let inode = s.get(ino)?;
        let dir = s.get(newparent)?;
        let bn = s.backing_name(&cipher, &dir, newname)?;
        s.write_sidecar(&dir, &bn)?;
        nix::unistd::linkat(&inode.fd, "", &dir.fd, bn.entry(), AtFlags::AT_EMPTY_PATH)
            .map_err(ex)?;
        Ok(s.lookup_entry(&dir, bn.entry())?.1)
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> R<FileAttr> {
        let s = &self.shared;
        let _pass = s.pass()?;
        let cipher = s.cipher()?;
        let dir = s.get(parent)?;
        let bn = s.backing_name(&cipher, &dir, name)?;
        let (uid, gid, _) = s.new_owner(req, &dir)?;
        let perm = Mode::from_bits_truncate(mode & !umask & 0o7777);
        s.write_sidecar(&dir, &bn)?;
        let created = nix::fcntl::openat(
            &dir.fd,
            bn.entry(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            perm,
        );
        let rw = match created {
            Ok(fd) => {
                nix::sys::stat::fchmod(&fd, perm).map_err(ex)?;
                nix::unistd::fchown(
                    &fd,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .map_err(ex)?;
                Some(File::from(fd))
            }
            // Created by someone else since the kernel looked: open it, unless O_EXCL.
            Err(nix::errno::Errno::EEXIST) if flags & libc::O_EXCL == 0 => None,
            Err(e) => return Err(ex(e)),
        };
        let (inode, _) = s.lookup_entry(&dir, bn.entry())?;
        if inode.kind != FileType::RegularFile {
            return Err(Errno::EISDIR);
        }
        {
            let mut slot = inode.file.write();
            if slot.rw.is_none()
                && let Some(rw) = rw
            {
                slot.rw = Some(rw);
            }
        }
        s.ensure_open(&inode)?;
        s.stat(&inode)
    }
}

fn remove_tmp_dir(parent: &impl AsFd, tmp: &str) -> nix::Result<()> {
    if let Ok(fd) = nix::fcntl::openat(
        parent,
        tmp,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        let _ = nix::unistd::unlinkat(
            &fd,
            names::DIR_ID_FILE,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    nix::unistd::unlinkat(parent, tmp, nix::unistd::UnlinkatFlags::RemoveDir)
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_ASYNC_DIO;
        if self.shared.options.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        for flag in wanted.iter() {
            if config.add_capabilities(flag).is_err() {
                tracing::warn!(?flag, "FUSE capability not supported by the kernel");
            }
        }
        let _ = config.set_max_write(self.shared.options.max_write);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.shared;
        let result = s.cipher().and_then(|_| s.get(ino)).and_then(|i| s.stat(&i));
        match result {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime) {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mknod(req, parent, name, mode, umask, rdev) {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mkdir(req, parent, name, mode, umask) {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_unlink(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_rmdir(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.do_symlink(req, parent, link_name, target) {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.do_link(ino, newparent, newname) {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        let result = s
            .cipher()
            .and_then(|_| s.get(ino))
            .and_then(|i| s.ensure_open(&i));
        match result {
            Ok(()) => reply.opened(FileHandle(0), open_mode(flags.0)),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.shared;
        let result = (|| -> R<Vec<u8>> {
            let cipher = s.cipher()?;
            let inode = s.get(ino)?;
            let data = s.with_file(&inode, |rw, st| {
                Content {
                    cipher: &cipher,
                    file: rw,
                    journal: None,
                }
                .read(st, offset, size as usize)
            })?;
            // Locked while decrypting: the plaintext must not go out.
            if s.is_locked() {
                return Err(Errno::EIO);
            }
            Ok(data)
        })();
        match result {
            Ok(data) => {
                s.stats.reads.fetch_add(1, Ordering::Relaxed);
                s.stats
                    .bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.data(&data);
            }
            Err(e) => {
                s.stats.errors.fetch_add(1, Ordering::Relaxed);
                reply.error(e);
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let s = &self.shared;
        let result = (|| -> R<()> {
            let _pass = s.pass()?;
            let cipher = s.cipher()?;
            let inode = s.get(ino)?;
            s.with_file_mut(&inode, |rw, st| {
                Content {
                    cipher: &cipher,
                    file: rw,
                    journal: s.journal(),
                }
                .write(st, offset, data)?;
                // The kernel leaves O_SYNC/O_DSYNC to us for files written through
                // (`open_mode`): the write is answered once it is durable.
                if flags.0 & libc::O_SYNC == libc::O_SYNC {
                    rw.sync_all()?;
                } else if flags.0 & libc::O_DSYNC != 0 {
                    rw.sync_data()?;
                }
                Ok(())
            })?;
            // A lock that raced with the write: the caller must not believe it durable.
            s.cipher().map(|_| ())
        })();
        match result {
            Ok(()) => {
                s.stats.writes.fetch_add(1, Ordering::Relaxed);
                s.stats
                    .bytes_written
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
            }
            Err(e) => {
                s.stats.errors.fetch_add(1, Ordering::Relaxed);
                reply.error(e);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.shared.cipher() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        let result = (|| -> R<()> {
            s.cipher()?;
            let inode = s.get(ino)?;
            if inode.kind != FileType::RegularFile {
                return Ok(());
            }
            s.with_file(&inode, |rw, _| {
                if datasync {
                    rw.sync_data()?;
                } else {
                    rw.sync_all()?;
                }
                Ok(())
            })?;
            // A lock that raced with the sync: the caller must not believe it durable.
            s.cipher().map(|_| ())
        })();
        s.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        // The listing is read at readdir offset 0 (so rewinddir sees new entries).
        let result = (|| -> R<u64> {
            s.cipher()?;
            let dir = s.get(ino)?;
            if dir.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            Ok(s.next_fh.fetch_add(1, Ordering::Relaxed))
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = &self.shared;
        let result = (|| -> R<Arc<Vec<DirEntry>>> {
            let cipher = s.cipher()?;
            if offset == 0 {
                let dir = s.get(ino)?;
                let entries = Arc::new(s.read_dir(&cipher, &dir)?);
                s.dirs.lock().insert(fh.0, entries.clone());
                return Ok(entries);
            }
            s.dirs.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
        })();
        match result {
            Ok(entries) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, e) in entries.iter().enumerate().skip(start) {
                    if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        let result = (|| -> R<()> {
            s.cipher()?;
            let dir = s.get(ino)?;
            let fd = nix::fcntl::openat(
                &dir.fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(ex)?;
            nix::unistd::fsync(&fd).map_err(ex)
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = &self.shared;
        let result = nix::fcntl::openat(
            &s.root.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| nix::sys::statvfs::fstatvfs(&fd));
        match result {
            Ok(v) => reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                u32::try_from(v.block_size()).unwrap_or(4096),
                names::MAX_NAME as u32,
                u32::try_from(v.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(ex(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent, name, mode, umask, flags) {
            Ok(attr) => reply.created(
                &self.ttl(),
                &attr,
                Generation(0),
                FileHandle(0),
                open_mode(flags),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        let result = (|| -> R<()> {
            // Plain allocation extends the size (as a hole: space is not reserved);
            // KEEP_SIZE is a no-op. Punching and zeroing ranges are not supported.
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let _pass = s.pass()?;
            let cipher = s.cipher()?;
            let inode = s.get(ino)?;
            if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Ok(());
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            s.with_file_mut(&inode, |rw, st| {
                if end <= st.size {
                    return Ok(());
                }
                Content {
                    cipher: &cipher,
                    file: rw,
                    journal: s.journal(),
                }
                .truncate(st, end)
            })
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
