//! Mounted-file-system tests: a real FUSE mount in this process, driven through std::fs.
//! They need root and /dev/fuse; elsewhere they are skipped (with a message).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kura_crypto::SecretBytes;
use kura_volume::{MountOptions, MountedVolume, NewVolume, Volume, VolumeError, new_volume_id};

struct Fixture {
    _tmp: tempfile::TempDir,
    backing: PathBuf,
    mp: PathBuf,
    key: [u8; 32],
    vol: Option<MountedVolume>,
}

impl Fixture {
    fn new() -> Option<Self> {
        Self::with_options(MountOptions::default())
    }

    fn with_options(options: MountOptions) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: needs root and /dev/fuse");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let backing = tmp.path().join("backing");
        let mp = tmp.path().join("mnt");
        fs::create_dir(&mp).unwrap();
        let mut key = [0u8; 32];
        kura_crypto::fill_random(&mut key).unwrap();
        let id = new_volume_id();
        let volume = Volume::create(
            &backing,
            b"wrapped-key-blob",
            NewVolume {
                volume_id: id.clone(),
                kms_key_arn: "arn:aws:kms:us-east-1:000000000000:key/test".into(),
                encryption_context: [("kura:volume-id".to_owned(), id)].into(),
            },
        )
        .unwrap();
        let vol = volume
            .mount(&mp, SecretBytes::copy_from(&key), options)
            .unwrap();
        Some(Self {
            _tmp: tmp,
            backing,
            mp,
            key,
            vol: Some(vol),
        })
    }

    fn vol(&self) -> &MountedVolume {
        self.vol.as_ref().unwrap()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    fn remount(&mut self) {
        let vol = self.vol.take().unwrap();
        vol.unmount().unwrap();
        drop(vol);
        let volume = Volume::open(&self.backing).unwrap();
        self.vol = Some(
            volume
                .mount(
                    &self.mp,
                    SecretBytes::copy_from(&self.key),
                    MountOptions::default(),
                )
                .unwrap(),
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(vol) = self.vol.take()
            && vol.unmount().is_err()
        {
            vol.force_unmount();
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i >> 12) as u8)
        })
        .collect()
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn files_directories_and_metadata_behave_like_posix() {
    let Some(f) = Fixture::new() else { return };
    // create, write, read, append
    fs::write(f.p("a.txt"), b"hello").unwrap();
    assert_eq!(fs::read(f.p("a.txt")).unwrap(), b"hello");
    let mut a = OpenOptions::new().append(true).open(f.p("a.txt")).unwrap();
    a.write_all(b" world").unwrap();
    drop(a);
    assert_eq!(fs::read(f.p("a.txt")).unwrap(), b"hello world");
    assert_eq!(fs::metadata(f.p("a.txt")).unwrap().len(), 11);

    // overwrite in the middle, read at offsets
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.p("a.txt"))
        .unwrap();
    file.write_all_at(b"HELLO", 0).unwrap();
    file.sync_all().unwrap();
    let mut buf = [0u8; 5];
    file.read_exact_at(&mut buf, 6).unwrap();
    assert_eq!(&buf, b"world");
    drop(file);
    assert_eq!(fs::read(f.p("a.txt")).unwrap(), b"HELLO world");

    // directories, nested, listing
    fs::create_dir_all(f.p("d1/d2/d3")).unwrap();
    for i in 0..300 {
        fs::write(f.p(&format!("d1/f{i:03}")), i.to_string()).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(f.p("d1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 301);
    assert_eq!(names[0], "d2");
    assert_eq!(names[300], "f299");
    assert_eq!(fs::read_to_string(f.p("d1/f123")).unwrap(), "123");

    // rename: file within and across directories, over an existing file, a directory
    fs::rename(f.p("d1/f000"), f.p("d1/d2/moved")).unwrap();
    assert_eq!(fs::read_to_string(f.p("d1/d2/moved")).unwrap(), "0");
    assert!(!f.p("d1/f000").exists());
    fs::rename(f.p("d1/f001"), f.p("d1/f002")).unwrap();
    assert_eq!(fs::read_to_string(f.p("d1/f002")).unwrap(), "1");
    fs::rename(f.p("d1/d2"), f.p("renamed")).unwrap();
    assert_eq!(fs::read_to_string(f.p("renamed/moved")).unwrap(), "0");
    assert!(f.p("renamed/d3").is_dir());

    // unlink, rmdir (non-empty refused)
    fs::remove_file(f.p("renamed/moved")).unwrap();
    assert_eq!(
        errno(&fs::remove_dir(f.p("renamed")).unwrap_err()),
        libc::ENOTEMPTY
    );
    fs::remove_dir(f.p("renamed/d3")).unwrap();
    fs::remove_dir(f.p("renamed")).unwrap();
    assert!(!f.p("renamed").exists());
    assert_eq!(errno(&fs::read(f.p("nope")).unwrap_err()), libc::ENOENT);

    // symlinks
    std::os::unix::fs::symlink("d1/f123", f.p("link")).unwrap();
    assert_eq!(fs::read_link(f.p("link")).unwrap(), Path::new("d1/f123"));
    assert_eq!(fs::read_to_string(f.p("link")).unwrap(), "123");
    assert_eq!(fs::symlink_metadata(f.p("link")).unwrap().len(), 7);

    // hard links share contents
    fs::hard_link(f.p("a.txt"), f.p("d1/hard")).unwrap();
    assert_eq!(fs::metadata(f.p("a.txt")).unwrap().nlink(), 2);
    fs::write(f.p("d1/hard"), b"via the link").unwrap();
    assert_eq!(fs::read(f.p("a.txt")).unwrap(), b"via the link");
    fs::remove_file(f.p("a.txt")).unwrap();
    assert_eq!(fs::read(f.p("d1/hard")).unwrap(), b"via the link");

    // permissions and ownership
    fs::set_permissions(f.p("d1/hard"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(f.p("d1/hard")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(f.p("d1/hard"), Some(4321), Some(8765)).unwrap();
    let m = fs::metadata(f.p("d1/hard")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4321, 8765));
    // new files get the mode asked for (umask aside)
    let g = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_ext(0o600)
        .open(f.p("private"))
        .unwrap();
    drop(g);
    assert_eq!(fs::metadata(f.p("private")).unwrap().mode() & 0o777, 0o600);

    // timestamps
    let file = File::options().write(true).open(f.p("private")).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    file.set_modified(t).unwrap();
    drop(file);
    assert_eq!(fs::metadata(f.p("private")).unwrap().modified().unwrap(), t);

    // long names (stored hashed, listed correctly)
    let long = "n".repeat(250);
    fs::write(f.p(&long), b"long").unwrap();
    assert_eq!(fs::read(f.p(&long)).unwrap(), b"long");
    assert!(
        fs::read_dir(&f.mp)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_str() == Some(long.as_str()))
    );
    fs::rename(f.p(&long), f.p(&"m".repeat(255))).unwrap();
    assert_eq!(fs::read(f.p(&"m".repeat(255))).unwrap(), b"long");
    assert_eq!(
        errno(&fs::write(f.p(&"x".repeat(256)), b"").unwrap_err()),
        libc::ENAMETOOLONG
    );

    // statfs works
    let st = nix::sys::statvfs::statvfs(&f.mp).unwrap();
    assert!(st.blocks() > 0);
}

trait ModeExt {
    fn mode_ext(&mut self, mode: u32) -> &mut Self;
}
impl ModeExt for OpenOptions {
    fn mode_ext(&mut self, mode: u32) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

#[test]
fn truncate_sparse_and_large_files() {
    let Some(f) = Fixture::new() else { return };
    // truncate down and up
    fs::write(f.p("t"), pattern(10_000, 1)).unwrap();
    let file = OpenOptions::new().write(true).open(f.p("t")).unwrap();
    file.set_len(5000).unwrap();
    file.set_len(9000).unwrap();
    drop(file);
    let got = fs::read(f.p("t")).unwrap();
    assert_eq!(got.len(), 9000);
    assert_eq!(&got[..5000], &pattern(10_000, 1)[..5000]);
    assert!(got[5000..].iter().all(|&b| b == 0));

    // sparse: a write far out leaves a hole that reads as zeros and costs no space
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(f.p("sparse"))
        .unwrap();
    file.seek(SeekFrom::Start(1 << 30)).unwrap();
    file.write_all(b"tail").unwrap();
    file.sync_all().unwrap();
    let mut buf = vec![1u8; 65536];
    file.read_exact_at(&mut buf, 12345).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    file.read_exact_at(&mut buf[..4], 1 << 30).unwrap();
    assert_eq!(&buf[..4], b"tail");
    drop(file);
    assert_eq!(fs::metadata(f.p("sparse")).unwrap().len(), (1 << 30) + 4);
    let backing_used: u64 = walk(&f.backing.join("data"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().blocks() * 512)
        .sum();
    assert!(backing_used < 10 << 20, "backing uses {backing_used} bytes");

    // a large file, written in odd-sized chunks, read back in other chunks
    let data = pattern(48 << 20, 9);
    let mut file = File::create(f.p("large")).unwrap();
    for chunk in data.chunks(777_777) {
        file.write_all(chunk).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let mut back = Vec::new();
    let mut file = File::open(f.p("large")).unwrap();
    let mut chunk = vec![0u8; 333_333];
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&chunk[..n]);
    }
    assert!(back == data, "large file round trip");
    // O_DIRECT is accepted
    use std::os::unix::fs::OpenOptionsExt;
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(f.p("large"));
    assert!(d.is_ok(), "O_DIRECT open: {d:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn the_backing_directory_holds_only_ciphertext() {
    let Some(mut f) = Fixture::new() else { return };
    let marker = b"PLAINTEXT-MARKER-4f1c";
    fs::create_dir(f.p("MARKERDIR")).unwrap();
    let mut contents = Vec::new();
    for _ in 0..2000 {
        contents.extend_from_slice(marker);
    }
    fs::write(f.p("MARKERDIR/MARKERFILE"), &contents).unwrap();
    fs::write(f.p("small-MARKER"), marker).unwrap();
    std::os::unix::fs::symlink("MARKER-TARGET", f.p("MARKERLINK")).unwrap();
    f.remount(); // everything flushed to the backing files
    for path in walk(&f.backing) {
        let name = path.to_string_lossy();
        assert!(!name.contains("MARKER"), "name leaks: {name}");
        if let Ok(bytes) = fs::read(&path) {
            assert!(
                !bytes.windows(6).any(|w| w == b"MARKER"),
                "contents leak in {name}"
            );
        }
    }
    for path in walk(&f.backing.join("data")) {
        if let Ok(target) = fs::read_link(&path) {
            assert!(!target.to_string_lossy().contains("MARKER"));
        }
    }
    // and it all reads back after the remount
    assert_eq!(fs::read(f.p("MARKERDIR/MARKERFILE")).unwrap(), contents);
    assert_eq!(
        fs::read_link(f.p("MARKERLINK")).unwrap(),
        Path::new("MARKER-TARGET")
    );
}

#[test]
fn lock_refuses_io_at_once_and_unlock_brings_the_data_back() {
    let Some(f) = Fixture::new() else { return };
    fs::write(f.p("kept"), pattern(100_000, 3)).unwrap();
    let open = File::open(f.p("kept")).unwrap();
    // warm the page cache: after the lock it must not serve plaintext
    let mut warm = Vec::new();
    (&open).read_to_end(&mut warm).unwrap();

    let t0 = Instant::now();
    f.vol().lock();
    let lock_took = t0.elapsed();
    let t1 = Instant::now();
    let err = open.read_at(&mut [0u8; 10], 0).unwrap_err();
    let refused_after = t1.elapsed();
    assert_eq!(errno(&err), libc::EIO);
    assert!(f.vol().is_locked());
    assert!(
        lock_took < Duration::from_millis(900),
        "lock took {lock_took:?}"
    );
    assert!(refused_after < Duration::from_millis(100));
    eprintln!("lock took {lock_took:?}; first refused read after {refused_after:?}");
    // every kind of access fails, none hangs
    assert_eq!(errno(&File::open(f.p("kept")).unwrap_err()), libc::EIO);
    assert_eq!(errno(&fs::write(f.p("new"), b"x").unwrap_err()), libc::EIO);
    assert!(
        fs::read_dir(&f.mp)
            .and_then(|mut d| d.next().transpose())
            .is_err()
    );
    assert!(f.vol().status().locked);
    assert!(f.vol().status().refused > 0);

    // a wrong key is refused; the right one restores service
    assert!(matches!(
        f.vol().unlock(SecretBytes::copy_from(&[0u8; 32])),
        Err(VolumeError::WrongKey)
    ));
    assert!(f.vol().is_locked());
    let t2 = Instant::now();
    f.vol().unlock(SecretBytes::copy_from(&f.key)).unwrap();
    let mut buf = [0u8; 10];
    open.read_exact_at(&mut buf, 0).unwrap();
    eprintln!("first read served {:?} after unlock", t2.elapsed());
    assert_eq!(buf.to_vec(), pattern(100_000, 3)[..10].to_vec());
    assert_eq!(fs::read(f.p("kept")).unwrap(), pattern(100_000, 3));
    fs::write(f.p("new"), b"x").unwrap();
}

#[test]
fn lock_while_writing_never_hangs() {
    let Some(f) = Fixture::new() else { return };
    let path = f.p("busy");
    let writer = std::thread::spawn(move || {
        let mut file = File::create(&path).unwrap();
        let chunk = vec![7u8; 65536];
        let start = Instant::now();
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
                return (e.raw_os_error(), start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(20) {
                return (None, start.elapsed());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    f.vol().lock();
    let (err, _) = writer.join().unwrap();
    let ended = t.elapsed();
    assert_eq!(err, Some(libc::EIO));
    assert!(
        ended < Duration::from_secs(2),
        "writer ended {ended:?} after lock"
    );
}

#[test]
fn freeze_holds_writes_until_thawed() {
    let Some(f) = Fixture::new() else { return };
    fs::write(f.p("x"), b"before").unwrap();
    fs::write(f.p("y"), b"untouched").unwrap();
    let guard = f.vol().freeze();
    assert!(f.vol().status().frozen);
    let path = f.p("x");
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"after!", 0).unwrap();
        file.sync_all().unwrap();
        Instant::now()
    });
    // Reads are served while frozen. (Not of "x": once the writer's fsync has started
    // writeback, the kernel holds reads of those pages until the write completes, which
    // is after the thaw.)
    assert_eq!(fs::read(f.p("y")).unwrap(), b"untouched");
    std::thread::sleep(Duration::from_millis(400));
    assert!(!writer.is_finished(), "the write waited for the thaw");
    drop(guard);
    let done = writer.join().unwrap();
    assert!(done.duration_since(t) >= Duration::from_millis(400));
    assert_eq!(fs::read(f.p("x")).unwrap(), b"after!");
}

#[test]
fn data_survives_remount_and_a_wrong_key_cannot_mount() {
    let Some(mut f) = Fixture::new() else { return };
    fs::create_dir(f.p("keep")).unwrap();
    fs::write(f.p("keep/file"), pattern(123_457, 4)).unwrap();
    f.remount();
    assert_eq!(fs::read(f.p("keep/file")).unwrap(), pattern(123_457, 4));
    let vol = f.vol.take().unwrap();
    vol.unmount().unwrap();
    drop(vol);
    let volume = Volume::open(&f.backing).unwrap();
    assert!(matches!(
        volume.mount(
            &f.mp,
            SecretBytes::copy_from(&[9u8; 32]),
            MountOptions::default()
        ),
        Err(VolumeError::WrongKey)
    ));
    f.vol = Some(
        volume
            .mount(
                &f.mp,
                SecretBytes::copy_from(&f.key),
                MountOptions::default(),
            )
            .unwrap(),
    );
    assert_eq!(fs::read(f.p("keep/file")).unwrap(), pattern(123_457, 4));
}

#[test]
fn unmount_refuses_while_busy() {
    let Some(f) = Fixture::new() else { return };
    let file = File::create(f.p("open")).unwrap();
    assert!(matches!(f.vol().unmount(), Err(VolumeError::Busy(_))));
    drop(file);
    f.vol().unmount().unwrap();
    assert!(!f.vol().is_mounted());
}

#[test]
fn works_without_the_writeback_cache() {
    let Some(f) = Fixture::with_options(MountOptions {
        writeback_cache: false,
        ..MountOptions::default()
    }) else {
        return;
    };
    let data = pattern(1 << 20, 5);
    fs::write(f.p("w"), &data).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.p("w"))
        .unwrap();
    file.write_all_at(b"xyz", 4095).unwrap();
    let mut want = data.clone();
    want[4095..4098].copy_from_slice(b"xyz");
    drop(file);
    assert_eq!(fs::read(f.p("w")).unwrap(), want);
}

/// One entry as a reader sees it: path, kind, mode, uid, gid, contents or link target.
type SeenEntry = (String, String, u32, u32, u32, Vec<u8>);

/// Everything a reader of a tree can see, plus which paths share an inode.
fn describe(root: &Path) -> (Vec<SeenEntry>, Vec<Vec<String>>) {
    let mut entries = Vec::new();
    let mut inodes: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    fn visit(
        root: &Path,
        dir: &Path,
        entries: &mut Vec<SeenEntry>,
        inodes: &mut std::collections::BTreeMap<u64, Vec<String>>,
    ) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let (kind, body) = if meta.is_dir() {
                visit(root, &path, entries, inodes);
                ("dir", Vec::new())
            } else if meta.file_type().is_symlink() {
                (
                    "link",
                    fs::read_link(&path).unwrap().into_os_string().into_vec(),
                )
            } else {
                ("file", fs::read(&path).unwrap())
            };
            if meta.is_file() && meta.nlink() > 1 {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
            }
            entries.push((rel, kind.into(), meta.mode(), meta.uid(), meta.gid(), body));
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    visit(root, root, &mut entries, &mut inodes);
    entries.sort();
    let mut links: Vec<Vec<String>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    links.sort();
    (entries, links)
}

/// Fills `root` with what a database directory can hold: nested directories, a long
/// name, a symbolic link, a hard link, empty, sparse, odd-sized and multi-chunk files,
/// owners and modes.
fn fill_tree(root: &Path) {
    fs::create_dir_all(root.join("base/16384")).unwrap();
    fs::create_dir(root.join("empty-dir")).unwrap();
    fs::write(
        root.join("base/16384/1259"),
        pattern(3 * 1024 * 1024 + 123, 1),
    )
    .unwrap();
    fs::write(root.join("PG_VERSION"), b"15\n").unwrap();
    File::create(root.join("empty")).unwrap();
    let sparse = File::create(root.join("sparse")).unwrap();
    sparse.write_all_at(b"tail", 5 * 1024 * 1024).unwrap();
    sparse
        .write_all_at(&pattern(10_000, 9), 4096 * 3 + 17)
        .unwrap();
    let long = "n".repeat(200);
    fs::write(root.join("base").join(&long), b"long name").unwrap();
    std::os::unix::fs::symlink("base/16384", root.join("link")).unwrap();
    fs::hard_link(root.join("PG_VERSION"), root.join("base/PG_VERSION.hard")).unwrap();
    std::os::unix::fs::chown(root.join("base/16384/1259"), Some(105), Some(106)).unwrap();
    fs::set_permissions(root.join("base/16384"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("PG_VERSION"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn new_volume(dir: &Path) -> Volume {
    let id = new_volume_id();
    Volume::create(
        dir,
        b"another-wrapped-key",
        NewVolume {
            volume_id: id.clone(),
            kms_key_arn: "arn:aws:kms:us-east-1:000000000000:key/other".into(),
            encryption_context: [("kura:volume-id".to_owned(), id)].into(),
        },
    )
    .unwrap()
}

fn mounted(volume: &Volume, at: &Path, key: &[u8; 32]) -> MountedVolume {
    fs::create_dir_all(at).unwrap();
    volume
        .mount(at, SecretBytes::copy_from(key), MountOptions::default())
        .unwrap()
}

#[test]
fn copy_into_volume_reencrypts_every_file_and_resumes() {
    let Some(mut f) = Fixture::new() else { return };
    fill_tree(&f.mp);
    let expected = describe(&f.mp);
    f.remount(); // flushed into the backing files
    let source_volume = f.vol.take().unwrap();
    source_volume.unmount().unwrap();
    drop(source_volume);

    let tmp = tempfile::tempdir().unwrap();
    let target = new_volume(&tmp.path().join("target"));
    let mut key = [0u8; 32];
    kura_crypto::fill_random(&mut key).unwrap();
    let copy = |progress: &mut dyn FnMut(u64, u64)| {
        kura_volume::copy_into_volume(
            kura_volume::CopySource::Volume {
                backing_dir: &f.backing,
                key: SecretBytes::copy_from(&f.key),
            },
            &target,
            SecretBytes::copy_from(&key),
            progress,
        )
    };
    let mut last = (0, 0);
    copy(&mut |done, total| last = (done, total)).unwrap();
    assert!(
        last.1 > 8 * 1024 * 1024 && last.0 == last.1,
        "progress {last:?}"
    );

    // Nothing of the source's ciphertext is reused: no stored block appears in both.
    let blocks = |root: &Path| {
        walk(root)
            .into_iter()
            .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
            .flat_map(|p| {
                fs::read(p)
                    .unwrap()
                    .chunks(4124)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .filter(|b| b.len() > 64 && b.iter().any(|&x| x != 0))
            .collect::<std::collections::HashSet<_>>()
    };
    let source_blocks = blocks(&f.backing.join("data"));
    assert!(blocks(&target.backing_dir().join("data")).is_disjoint(&source_blocks));

    // Interrupted copies: drop from the target an empty directory, a file, and one name
    // of the hard-linked file (the one the copy meets first, so the other name is the
    // complete one), leave a half-written temporary, and copy again.
    let data = target.backing_dir().join("data");
    let top: Vec<(PathBuf, fs::Metadata)> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| (p.clone(), fs::symlink_metadata(&p).unwrap()))
        .collect();
    let empty_dir = top
        .iter()
        .find(|(p, m)| m.is_dir() && fs::read_dir(p).unwrap().count() == 1)
        .unwrap();
    let linked = top
        .iter()
        .find(|(_, m)| m.is_file() && m.nlink() == 2)
        .unwrap();
    let plain = top
        .iter()
        .find(|(_, m)| m.is_file() && m.nlink() == 1 && m.len() > 4096)
        .unwrap();
    fs::remove_dir_all(&empty_dir.0).unwrap();
    fs::remove_file(&linked.0).unwrap();
    fs::remove_file(&plain.0).unwrap();
    fs::write(data.join(".kura-tmp.interrupted"), b"half").unwrap();
    copy(&mut |_, _| {}).unwrap();
    assert!(!data.join(".kura-tmp.interrupted").exists());

    let at = tmp.path().join("mnt");
    let mount = mounted(&target, &at, &key);
    assert_eq!(describe(&at), expected);
    // Sparse stays sparse: 5 MiB of file, a few blocks stored.
    assert!(fs::metadata(at.join("sparse")).unwrap().blocks() < 200);
    mount.unmount().unwrap();

    // A wrong source key is refused before anything is written.
    let other = new_volume(&tmp.path().join("other"));
    let wrong = kura_volume::copy_into_volume(
        kura_volume::CopySource::Volume {
            backing_dir: &f.backing,
            key: SecretBytes::copy_from(&[7u8; 32]),
        },
        &other,
        SecretBytes::copy_from(&key),
        &mut |_, _| {},
    );
    assert!(matches!(wrong, Err(VolumeError::WrongKey)), "{wrong:?}");
}

#[test]
fn copy_into_volume_encrypts_a_plain_tree() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    fill_tree(&plain);
    let expected = describe(&plain);
    let target = new_volume(&tmp.path().join("target"));
    let key = [3u8; 32];
    kura_volume::copy_into_volume(
        kura_volume::CopySource::Plain(&plain),
        &target,
        SecretBytes::copy_from(&key),
        &mut |_, _| {},
    )
    .unwrap();
    for path in walk(target.backing_dir()) {
        let bytes = fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(9).any(|w| w == b"long name"),
            "plaintext in {path:?}"
        );
    }
    let at = tmp.path().join("mnt");
    let mount = mounted(&target, &at, &key);
    assert_eq!(describe(&at), expected);
    mount.unmount().unwrap();
}

#[test]
fn files_opened_for_synchronous_writes_are_written_through_and_stay_coherent() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(mut f) = Fixture::new() else { return };
    let cached = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(f.p("wal"))
        .unwrap();
    cached.write_all_at(&pattern(64 * 1024, 1), 0).unwrap();
    let synchronous = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(f.p("wal"))
        .unwrap();
    // Unaligned writes through the O_DSYNC descriptor, over cached data and past the end.
    let mut expected = pattern(64 * 1024, 1);
    for (offset, len, seed) in [
        (100usize, 5000usize, 2u8),
        (8192, 8192, 3),
        (60_000, 10_000, 4),
    ] {
        let data = pattern(len, seed);
        synchronous.write_all_at(&data, offset as u64).unwrap();
        if expected.len() < offset + len {
            expected.resize(offset + len, 0);
        }
        expected[offset..offset + len].copy_from_slice(&data);
        // Both descriptors see every write at once.
        let mut through_cache = vec![0u8; expected.len()];
        cached.read_exact_at(&mut through_cache, 0).unwrap();
        assert_eq!(through_cache, expected);
        let mut direct = vec![0u8; expected.len()];
        synchronous.read_exact_at(&mut direct, 0).unwrap();
        assert_eq!(direct, expected);
    }
    assert_eq!(cached.metadata().unwrap().len(), expected.len() as u64);
    drop((cached, synchronous));
    f.remount();
    assert_eq!(fs::read(f.p("wal")).unwrap(), expected);
}
