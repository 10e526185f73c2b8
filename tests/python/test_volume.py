"""`kura volume` end to end: a KMS key on a real kura server, the CLI as separate processes,
the mounted file system used by root and by the postgres user, the backing directory
inspected for plaintext, lock/unlock timing, and kill -9 of the FUSE daemon during writes.
"""

import base64
import json
import os
import pathlib
import subprocess
import threading
import time

import pytest

from volume_harness import EIO, VolumeProc, backing_files, cli_env, eio, needs_fuse, run_cli, vol_root  # noqa: F401
from kura_harness import KURA_BIN

pytestmark = needs_fuse


@pytest.fixture
def volume(kura, vol_root):
    key_id = kura.client("kms").create_key(Description="volume test")["KeyMetadata"]["KeyId"]
    vol = VolumeProc(kura, key_id, vol_root)
    vol.key_id = key_id
    vol.mount()
    yield vol
    vol.cleanup()


def test_create_stores_only_the_wrapped_key_with_a_context_naming_the_volume(kura, volume):
    meta = json.loads((volume.backing / "kura-volume.json").read_text())
    assert meta["volume_id"] == volume.volume_id
    assert meta["encryption_context"] == {"kura:volume-id": volume.volume_id}
    assert meta["kms_key_arn"].endswith(volume.key_id)
    assert meta["cipher"]["contents"] == "AES-256-GCM"
    kms = kura.client("kms")
    blob = base64.b64decode(meta["wrapped_key"])
    plaintext = kms.decrypt(CiphertextBlob=blob, EncryptionContext=meta["encryption_context"])["Plaintext"]
    assert len(plaintext) == 32
    # the wrapped key only opens with the volume's context
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"kura:volume-id": "other"})
    # write something, then check no backing file holds the plaintext key or the data
    (volume.mnt / "SECRET-NAME.txt").write_bytes(b"SECRET-CONTENTS " * 1000)
    volume.unmount()
    for path in backing_files(volume.backing):
        data = path.read_bytes()
        assert plaintext not in data, path
        assert b"SECRET-CONTENTS" not in data, path
        assert "SECRET" not in str(path)


def test_posix_operations_as_root_and_as_postgres(volume):
    m = volume.mnt
    (m / "dir" / "sub").mkdir(parents=True)
    (m / "dir" / "a").write_text("alpha")
    os.rename(m / "dir" / "a", m / "dir" / "sub" / "b")
    os.link(m / "dir" / "sub" / "b", m / "dir" / "hard")
    os.symlink("sub/b", m / "dir" / "sym")
    assert (m / "dir" / "sym").read_text() == "alpha"
    assert os.stat(m / "dir" / "hard").st_nlink == 2
    with open(m / "dir" / "t", "wb") as f:
        f.write(b"x" * 10000)
        f.truncate(4097)
        f.flush()
        os.fsync(f.fileno())
    assert os.path.getsize(m / "dir" / "t") == 4097
    os.unlink(m / "dir" / "t")
    assert sorted(os.listdir(m / "dir")) == ["hard", "sub", "sym"]

    # the postgres user works in a directory it owns; ownership reaches the backing files
    pg = m / "pg"
    pg.mkdir()
    subprocess.run(["chown", "postgres:postgres", str(pg)], check=True)
    script = f"set -e; cd {pg}; echo hello > f; mkdir d; mv f d/g; cat d/g; chmod 600 d/g; ls -ln d"
    run = subprocess.run(["runuser", "-u", "postgres", "--", "sh", "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith("hello")
    st = os.stat(pg / "d" / "g")
    import pwd
    uid = pwd.getpwnam("postgres").pw_uid
    assert st.st_uid == uid and (st.st_mode & 0o777) == 0o600
    assert any(os.stat(p).st_uid == uid for p in backing_files(volume.backing / "data"))
    # another user is refused by the permissions (default_permissions)
    denied = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(pg / "d" / "g")],
                            capture_output=True, text=True)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_lock_refuses_io_fast_and_unlock_restores_it(volume):
    path = volume.mnt / "data.bin"
    payload = os.urandom(1 << 20)
    path.write_bytes(payload)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 16, 0) == payload[:16]  # cached in the kernel now
        t0 = time.monotonic()
        status = json.loads(volume.ctl("lock").stdout)
        assert status["locked"] is True
        # first refused read, measured from the end of the lock command
        t1 = time.monotonic()
        assert eio(lambda: os.pread(fd, 16, 0)) == EIO
        refused = time.monotonic() - t1
        assert time.monotonic() - t0 < 2.0 and refused < 0.2
        assert eio(lambda: path.read_bytes()) == EIO
        assert eio(lambda: (volume.mnt / "new").write_text("x")) == EIO
        assert volume.status()["locked"] is True  # the mount stays; status still answers

        volume.ctl("unlock")
        assert volume.status()["locked"] is False
        assert os.pread(fd, 16, 0) == payload[:16]
        assert path.read_bytes() == payload
    finally:
        os.close(fd)


def test_unlock_fails_cleanly_when_the_kms_key_is_disabled(kura, volume):
    kms = kura.client("kms")
    volume.ctl("lock")
    kms.disable_key(KeyId=volume.key_id)
    try:
        result = volume.ctl("unlock", check=False)
        assert result.returncode != 0
        assert "DisabledException" in result.stderr
        assert volume.status()["locked"] is True
    finally:
        kms.enable_key(KeyId=volume.key_id)
    volume.ctl("unlock")
    assert volume.status()["locked"] is False


def test_mount_refuses_clearly(kura, tmp_path, volume):
    # not root
    result = subprocess.run(["runuser", "-u", "nobody", "--", KURA_BIN, "volume", "mount",
                             "--backing-dir", str(volume.backing), "--mount-point", str(tmp_path)],
                            capture_output=True, text=True, timeout=20, env=cli_env())
    assert result.returncode != 0 and "root" in result.stderr
    # a directory that is not a volume
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(kura, "mount", "--backing-dir", str(empty), "--mount-point", str(tmp_path), check=False)
    assert result.returncode != 0 and "not a kura volume" in result.stderr
    # the same volume twice: its control socket is live
    other = tmp_path / "other-mnt"
    other.mkdir()
    result = run_cli(kura, "mount", "--backing-dir", str(volume.backing), "--mount-point", str(other),
                     "--control-socket", str(volume.socket), check=False, timeout=30)
    assert result.returncode != 0
    # a key the caller may not use: the KMS error is shown
    result = run_cli(kura, "create", "--key-id", "alias/does-not-exist", "--backing-dir",
                     str(tmp_path / "nokey"), check=False)
    assert result.returncode != 0 and "NotFoundException" in result.stderr


def test_unmount_is_refused_while_busy_and_forced_on_request(volume):
    f = open(volume.mnt / "held", "w")
    try:
        result = volume.ctl("unmount", check=False)
        assert result.returncode != 0 and "in use" in result.stderr
        assert volume.process.poll() is None
    finally:
        f.close()
    volume.unmount()
    assert volume.process.returncode == 0
    assert not os.path.ismount(volume.mnt)


WRITER = r"""
import os, sys
path, log = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
ack = open(log, "a")
n = 0
while True:
    n += 1
    # an append, and an in-place rewrite of the first 12 KiB (like a WAL page rewrite)
    rec = (b"%010d" % n) * 100
    try:
        os.pwrite(fd, rec, 12288 + (n - 1) * len(rec))
        os.pwrite(fd, (b"%010d" % n) * 1228 + b"\n" * 8, 0)
        os.fsync(fd)
    except OSError:
        break
    ack.write("%d\n" % n); ack.flush(); os.fsync(ack.fileno())
"""


def test_kill9_of_the_volume_process_keeps_every_fsynced_write(volume, tmp_path):
    writer_py = tmp_path / "writer.py"
    writer_py.write_text(WRITER)
    acks = tmp_path / "acks"
    # Many short cycles: a kill that lands inside the journal's own write is rare (this
    # loop found a torn journal record replayed over good blocks, 1 cycle in ~30).
    for cycle in range(16):
        proc = subprocess.Popen(["python3", str(writer_py), str(volume.mnt / "log.bin"), str(acks)])
        time.sleep(0.3 + (cycle % 5) * 0.09)
        volume.kill9()
        proc.wait(timeout=20)
        acked = [int(x) for x in acks.read_text().split()]
        assert acked, "the writer made progress"
        # remount (the dead mount is detached by the new process) and check every ack
        volume.mount()
        data = (volume.mnt / "log.bin").read_bytes()
        head = data[:12288]
        last = acked[-1]
        # the rewritten block holds the last acknowledged version or a later one, never garbage
        head_n = int(head[:10])
        assert head_n >= last and head == (b"%010d" % head_n) * 1228 + b"\n" * 8
        for n in range(1, last + 1):
            off = 12288 + (n - 1) * 1000
            assert data[off:off + 1000] == (b"%010d" % n) * 100, f"record {n} of {last}"
        # carry on from a clean slate
        (volume.mnt / "log.bin").unlink()
        acks.unlink()
