"""Drive `kura volume` (create, mount, lock, unlock, status, unmount) as separate processes.

The mount runs as its own process so tests can kill -9 it. Needs root and /dev/fuse.
"""

import errno
import json
import os
import pathlib
import selectors
import signal
import subprocess
import time

import pytest

from kura_harness import KURA_BIN, REGION, USERS

needs_fuse = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not os.path.exists("/usr/bin/fusermount3"),
    reason="needs root, /dev/fuse and fuse3",
)


@pytest.fixture
def vol_root():
    """A scratch directory other users can traverse (the postgres user works below it)."""
    import shutil
    import tempfile
    path = pathlib.Path(tempfile.mkdtemp(prefix="kura-volume-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["umount", "-l", *[str(p) for p in path.glob("*-mnt")]], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def cli_env(user="admin_a"):
    _, _, key_id, secret, _ = USERS[user]
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "KURA_LOG": "info",
    })
    env.pop("AWS_PROFILE", None)
    return env


def run_cli(server, *args, user="admin_a", check=True, timeout=60):
    result = subprocess.run([KURA_BIN, "volume", *args, "--endpoint-url", server.endpoint]
                            if args[0] in ("create", "mount", "unlock") else [KURA_BIN, "volume", *args],
                            capture_output=True, text=True, env=cli_env(user), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kura volume {' '.join(args)} failed: {result.stderr}")
    return result


class VolumeProc:
    """One volume: its backing dir, its mount point, and the `kura volume mount` process."""

    def __init__(self, server, key_id, root, name="vol"):
        self.server = server
        self.root = pathlib.Path(root)
        self.backing = self.root / f"{name}-backing"
        self.mnt = self.root / f"{name}-mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        out = run_cli(server, "create", "--key-id", key_id, "--backing-dir", str(self.backing))
        self.created = json.loads(out.stdout)
        self.volume_id = self.created["VolumeId"]
        self.socket = self.root / f"{name}.sock"
        self.process = None
        self.log_path = self.root / f"{name}-mount.log"

    def mount(self, *extra, timeout=20):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [KURA_BIN, "volume", "mount", "--backing-dir", str(self.backing), "--mount-point", str(self.mnt),
             "--control-socket", str(self.socket), "--endpoint-url", self.server.endpoint, *extra],
            stdout=subprocess.PIPE, stderr=log, env=cli_env(), start_new_session=True)
        line = self._read_line(timeout)
        if "mounted at" not in line:
            self.process.wait(timeout=10)
            raise AssertionError(f"mount failed: {line!r}; log: {self.log_path.read_text()}")
        return line

    def _read_line(self, timeout):
        fd = self.process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        text = b""
        while time.monotonic() < deadline and b"\n" not in text:
            if selector.select(timeout=0.1):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                text += chunk
            elif self.process.poll() is not None:
                break
        selector.close()
        return text.decode(errors="replace")

    def ctl(self, command, *extra, check=True):
        if command == "unlock":
            args = ["unlock", "--backing-dir", str(self.backing), "--control-socket", str(self.socket), *extra]
        else:
            args = [command, "--control-socket", str(self.socket), *extra]
        return run_cli(self.server, *args, check=check)

    def status(self):
        return json.loads(self.ctl("status").stdout)

    def unmount(self, force=False):
        if self.process is None or self.process.poll() is not None:
            return
        self.ctl("unmount", *(["--force"] if force else []))
        self.process.wait(timeout=30)
        self.process.stdout.close()

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process.stdout.close()

    def cleanup(self):
        if self.process is not None and self.process.poll() is None:
            try:
                self.unmount(force=True)
            except Exception:
                self.process.kill()
                self.process.wait(timeout=10)
        # A killed daemon leaves a dead mount behind.
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)


def backing_files(backing):
    for path in pathlib.Path(backing).rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def eio(fn):
    """Runs fn; returns the errno it failed with (None if it succeeded)."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


EIO = errno.EIO
