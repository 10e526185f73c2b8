//! Small system helpers (all through safe wrappers: std and nix; no `unsafe` here).

use std::fs::File;
use std::io::{self, IoSlice};
use std::path::Path;

use crate::VolumeError;

/// `pwritev` that keeps going after short writes.
pub(crate) fn pwrite_all_vectored(file: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0usize;
    while done < total {
        // Rebuild the slice list from `done` on (short writes are rare: only signals).
        let mut skip = done;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(part.get(skip..).unwrap_or_default()));
            skip = 0;
        }
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| i64::try_from(o).ok())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        match nix::sys::uio::pwritev(file, &slices, at) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

/// Checks what mounting needs, so that a missing piece gives a clear error instead of a
/// hang or an obscure errno: root, `/dev/fuse`, the `fuse` file system in the kernel, and a
/// mount point that is an existing directory.
pub fn check_fuse_available(mount_point: &Path) -> Result<(), VolumeError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(VolumeError::FuseUnavailable(
            "mounting a volume needs root (it serves other users, such as postgres, with allow_other)".into(),
        ));
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VolumeError::FuseUnavailable(
                "/dev/fuse does not exist: load the module (modprobe fuse) or, in a container, pass the device (--device /dev/fuse)".into(),
            ));
        }
        Err(e) => {
            return Err(VolumeError::FuseUnavailable(format!(
                "cannot open /dev/fuse: {e}"
            )));
        }
    }
    if let Ok(filesystems) = std::fs::read_to_string("/proc/filesystems")
        && !filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        return Err(VolumeError::FuseUnavailable(
            "the kernel has no fuse file system (modprobe fuse)".into(),
        ));
    }
    if fusermount_path().is_none() {
        return Err(VolumeError::FuseUnavailable(
            "fusermount3 is not installed (Debian: apt-get install fuse3)".into(),
        ));
    }
    match std::fs::metadata(mount_point) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(VolumeError::Mount(format!(
            "{} is not a directory",
            mount_point.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(VolumeError::Mount(format!(
            "{} is a dead FUSE mount (its daemon died); unmount it first",
            mount_point.display()
        ))),
        Err(e) => Err(VolumeError::io(
            format!("mount point {}", mount_point.display()),
            e,
        )),
    }
}

/// The `fusermount3` helper, if installed (needed to unmount a dead mount as a user, and
/// shipped with the `fuse3` package that also provides /etc/fuse.conf).
pub fn fusermount_path() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Detaches whatever is mounted at `mount_point`, dead or not, for a caller that owns
/// the mount point and knows no mount of its own is there: after `kill -9` of the
/// process that served it, the old FUSE connection can stay alive for a while (a child
/// process that inherited it is still exiting), so it is neither usable nor reported as
/// dead (ENOTCONN) yet. Returns true if something was detached.
pub fn detach_stale_mount(mount_point: &Path) -> Result<bool, VolumeError> {
    // Resolve the parent only: touching the mount point of a connection nobody serves
    // would wait for it.
    let (Some(parent), Some(name)) = (mount_point.parent(), mount_point.file_name()) else {
        return clear_dead_mount(mount_point);
    };
    let Ok(parent) = parent.canonicalize() else {
        return clear_dead_mount(mount_point);
    };
    let wanted = parent.join(name);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| VolumeError::io("reading /proc/self/mountinfo", e))?;
    // Field 5 is the mount point, with spaces and the like escaped as octal.
    let wanted = wanted.to_string_lossy().replace(' ', "\\040");
    let mounted = mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()));
    if !mounted {
        return clear_dead_mount(mount_point);
    }
    detach(mount_point)?;
    Ok(true)
}

/// Lazily detaches the mount at `mount_point` (it goes once nothing uses it).
fn detach(mount_point: &Path) -> Result<(), VolumeError> {
    nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        VolumeError::Mount(format!(
            "could not detach the mount at {}: {e}",
            mount_point.display()
        ))
    })
}

/// If `mount_point` is a dead FUSE mount (ENOTCONN: the daemon was killed), detaches it.
/// Returns true if it did.
pub fn clear_dead_mount(mount_point: &Path) -> Result<bool, VolumeError> {
    match std::fs::metadata(mount_point) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            detach(mount_point)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Locks this process's memory against swapping (current and future pages, faulted in
/// lazily) and keeps it out of core dumps. For a process whose job is to hold volume keys,
/// such as `kura volume mount`; a server embedding volumes decides for itself.
pub fn protect_process_memory() -> Result<(), VolumeError> {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    mlockall(flags).map_err(|e| VolumeError::io("mlockall", io::Error::from(e)))?;
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| VolumeError::io("prctl(PR_SET_DUMPABLE)", io::Error::from(e)))?;
    Ok(())
}

/// Raises the open-files limit to its hard maximum (the volume keeps two descriptors per
/// file the kernel remembers).
pub(crate) fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("could not raise the open files limit to {hard}: {e}");
    }
}
