"""Start and stop real `kura serve` processes for the integration tests, and build clients.

Each KuraServer is a real process on a free loopback port with its own data directory and
configuration file; tests talk to it only through real clients (boto3, the aws CLI) and
raw HTTP where they need to send what no SDK would.
"""

import atexit
import os
import pathlib
import re
import selectors
import shutil
import shutil
import signal
import subprocess
import time
import uuid

import boto3
import botocore.config

REPO = pathlib.Path(__file__).resolve().parents[2]
KURA_BIN = os.environ.get("KURA_BIN", str(REPO / "target" / "debug" / "kura"))
AWS_CLI = os.environ.get("KURA_TEST_AWS_CLI", "/usr/bin/aws")
REGION = "ap-northeast-1"

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"

# name -> (account, user, access key id, secret, managed policies)
USERS = {
    "admin_a": (ACCOUNT_A, "administrator", "AKIAAAAAAAAAAAAAAAAA", "secret-a-administrator-0000000000000000",
                ["arn:aws:iam::aws:policy/AdministratorAccess"]),
    "reader_a": (ACCOUNT_A, "reader", "AKIAAAAAAAAAAAAREADR", "secret-a-reader-000000000000000000000000",
                 ["arn:aws:iam::aws:policy/ReadOnlyAccess"]),
    "nobody_a": (ACCOUNT_A, "nobody", "AKIAAAAAAAAAAANOBODY", "secret-a-nobody-000000000000000000000000", []),
    "admin_b": (ACCOUNT_B, "administrator", "AKIABBBBBBBBBBBBBBBB", "secret-b-administrator-0000000000000000",
                ["arn:aws:iam::aws:policy/AdministratorAccess"]),
}


def config_text(extra=""):
    lines = [f'region = "{REGION}"', "[kms]", "maintenance_interval_secs = 1"]
    for account in (ACCOUNT_A, ACCOUNT_B):
        lines += ["[[accounts]]", f'id = "{account}"']
        for acct, user, key_id, secret, policies in USERS.values():
            if acct != account:
                continue
            quoted = ", ".join(f'"{p}"' for p in policies)
            lines += [
                "[[accounts.users]]",
                f'name = "{user}"',
                f'access_key_id = "{key_id}"',
                f'secret_access_key = "{secret}"',
                f"policies = [{quoted}]",
            ]
    return "\n".join(lines) + "\n" + extra


# Database files of test servers: a directory the engines' users can traverse (pytest's
# own temporary directories are not), removed when the test run ends.
RDS_ROOT = pathlib.Path("/var/tmp/kura-tests")


def with_rds_dir(config, rds_dir):
    line = f'data_dir = "{rds_dir}"\n'
    if "[rds]\n" in config:
        return config.replace("[rds]\n", "[rds]\n" + line, 1)
    return config + "\n[rds]\n" + line


class KuraServer:
    """A running `kura serve` process."""

    BANNER = re.compile(r"serving region (\S+) on (https?://\S+)")

    def __init__(self, data_dir, config=None, extra_args=(), listen="127.0.0.1:0"):
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir.parent / (self.data_dir.name + ".toml")
        self.rds_dir = RDS_ROOT / uuid.uuid4().hex
        atexit.register(shutil.rmtree, self.rds_dir, True)
        self.config_path.write_text(with_rds_dir(config if config is not None else config_text(), self.rds_dir))
        self.extra_args = list(extra_args)
        self.listen = listen
        self.process = None
        self.endpoint = None
        self.banner = ""
        self.start()

    def start(self, timeout=20):
        args = [KURA_BIN, "serve", "--listen", self.listen, "--data-dir", str(self.data_dir),
                "--config", str(self.config_path), *self.extra_args]
        self.log = open(self.data_dir.parent / (self.data_dir.name + ".log"), "ab")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log)
        self.banner = self._read_banner(timeout)
        match = self.BANNER.search(self.banner)
        if not match:
            raise RuntimeError(f"kura did not start: {self.banner!r}")
        self.endpoint = match.group(2)
        # Keep later runs of this server on the same port, so clients keep working.
        self.listen = self.endpoint.split("://", 1)[1]

    def _read_banner(self, timeout):
        """Reads start-up output until the banner is complete (unbuffered, so select works)."""
        fd = self.process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        text = b""
        while time.monotonic() < deadline and b"kms list-keys" not in text:
            if selector.select(timeout=0.1):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                text += chunk
            elif self.process.poll() is not None:
                break
        selector.close()
        return text.decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        code = self.process.returncode if self.process else None
        if self.process:
            self.process.stdout.close()
        self.log.close()
        return code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        self.start()

    def client(self, service="kms", user="admin_a", **config):
        _, _, key_id, secret, _ = USERS[user]
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False, **config),
        )

    def aws(self, *args, user="admin_a", check=True, env=None):
        """Runs the aws CLI (v2, Debian's package) against this server; returns stdout."""
        _, _, key_id, secret, _ = USERS[user]
        run_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.data_dir.parent),
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
        }
        run_env.update(env or {})
        result = subprocess.run([AWS_CLI, "--endpoint-url", self.endpoint, "--output", "json", *args],
                                capture_output=True, text=True, env=run_env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result


# A tiny LD_PRELOAD library that moves the wall clock by KURA_TEST_TIME_SHIFT seconds: it
# lets a test see a session expire, a key be deleted or rotated, without waiting for it.
TIME_SHIFT_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long shift(void) {
    const char *s = getenv("KURA_TEST_TIME_SHIFT");
    return s ? atol(s) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int result = real(clock, ts);
    if (result == 0 && ts && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) ts->tv_sec += shift();
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int result = clock_gettime(CLOCK_REALTIME, &ts);
    if (result == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    (void)tz;
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"""


def build_time_shift_library(directory):
    """Compiles TIME_SHIFT_SHIM in `directory`; returns the library's path, or None
    without a C compiler."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    directory = pathlib.Path(directory)
    (directory / "shift.c").write_text(TIME_SHIFT_SHIM)
    library = directory / "libshift.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(directory / "shift.c"), "-ldl"],
                   check=True, capture_output=True)
    return str(library)


def shifted_env(library, seconds):
    """The environment that runs a client (the aws CLI) with its clock moved `seconds` ahead."""
    return {"LD_PRELOAD": library, "KURA_TEST_TIME_SHIFT": str(seconds)}


def restart_shifted(server, library, seconds):
    """Restarts `server` with its clock moved `seconds` ahead."""
    server.stop()
    saved = {name: os.environ.get(name) for name in ("LD_PRELOAD", "KURA_TEST_TIME_SHIFT")}
    os.environ.update(shifted_env(library, seconds))
    try:
        server.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
