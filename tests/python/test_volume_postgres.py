"""PostgreSQL 15 on a `kura volume`: initdb, pgbench, kill -9 of the FUSE daemon and of
postgres under load with every acknowledged row surviving, and lock/unlock under load.
"""

import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

from volume_harness import VolumeProc, needs_fuse, vol_root  # noqa: F401

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
pytestmark = [needs_fuse, pytest.mark.skipif(not (PG_BIN / "postgres").exists(), reason="needs PostgreSQL 15")]
PORT = 55499


def as_pg(*args, check=True, timeout=120, **kw):
    result = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed: {result.stdout}\n{result.stderr}")
    return result


class Postgres:
    def __init__(self, data, sock):
        self.data = data
        self.sock = sock

    def start(self):
        as_pg(PG_BIN / "pg_ctl", "-D", self.data, "-o", f"-p {PORT} -k {self.sock} -c listen_addresses=''",
              "-l", self.sock / "pg.log", "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def psql(self, sql, check=True):
        return as_pg(PG_BIN / "psql", "-h", self.sock, "-p", PORT, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql,
                     "postgres", check=check, timeout=60)

    def pgbench(self, *args, check=True, timeout=300):
        return as_pg(PG_BIN / "pgbench", "-h", self.sock, "-p", PORT, *args, "postgres", check=check,
                     timeout=timeout)

    def processes(self):
        """The postmaster and its children (processes this test started)."""
        pids = {self.pid}
        for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                pids.add(int(stat.parent.name))
        return pids

    def kill9(self, pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(pathlib.Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)

    def stop(self):
        as_pg(PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)


class AckWriter(threading.Thread):
    """One psql session inserting a row per transaction; records each acknowledged id."""

    def __init__(self, pg):
        super().__init__(daemon=True)
        self.pg = pg
        self.acked = []
        self.stop_flag = False

    def run(self):
        proc = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "psql"), "-h", str(self.pg.sock),
                                 "-p", str(PORT), "-qAt", "-v", "ON_ERROR_STOP=1", "postgres"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1)
        n = self.acked[-1] if self.acked else 0
        try:
            while not self.stop_flag:
                n += 1
                proc.stdin.write(f"INSERT INTO acks VALUES ({n});\n\\echo ack {n}\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                if line.strip() != f"ack {n}":
                    break
                self.acked.append(n)
        except (BrokenPipeError, OSError):
            pass
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture
def pg_volume(kura, vol_root):
    key_id = kura.client("kms").create_key(Description="postgres volume")["KeyMetadata"]["KeyId"]
    vol = VolumeProc(kura, key_id, vol_root, name="pg")
    vol.mount()
    sock = vol_root / "sock"
    sock.mkdir()
    subprocess.run(["chown", "postgres", str(sock)], check=True)
    base = vol.mnt / "pg"
    base.mkdir()
    subprocess.run(["chown", "postgres:postgres", str(base)], check=True)
    pg = Postgres(base / "data", sock)
    yield vol, pg
    if (pg.data / "postmaster.pid").exists():
        pg.stop()
    vol.cleanup()


def test_postgres_survives_repeated_kill9_of_the_volume_and_of_postgres(pg_volume):
    vol, pg = pg_volume
    as_pg(PG_BIN / "initdb", "-D", pg.data, "-A", "trust", "--no-sync")
    pg.start()
    pg.pgbench("-i", "-s", "2", "-q")
    out = pg.pgbench("-c", "4", "-j", "2", "-T", "5").stdout
    assert "number of failed transactions: 0" in out
    pg.psql("CREATE TABLE acks (id bigint PRIMARY KEY); CREATE EXTENSION amcheck")

    writer_acked = []
    for cycle in range(3):
        writer = AckWriter(pg)
        writer.acked = list(writer_acked)
        writer.start()
        bench = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "pgbench"), "-h", str(pg.sock),
                                  "-p", str(PORT), "-c", "2", "-T", "30", "postgres"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.5 + cycle)
        postgres = pg.processes()
        # the FUSE daemon first (cycle 0, 2) or postgres first (cycle 1)
        if cycle == 1:
            pg.kill9(postgres)
            vol.kill9()
        else:
            vol.kill9()
            pg.kill9(postgres)
        writer.join(timeout=30)
        bench.wait(timeout=60)
        writer_acked = writer.acked
        assert len(writer_acked) > 10, "the writer made progress"

        vol.mount()  # detaches the dead mount, replays interrupted writes
        pg.start()  # PostgreSQL's own crash recovery
        present = {int(x) for x in pg.psql("SELECT id FROM acks").stdout.split()}
        missing = [n for n in writer_acked if n not in present]
        assert not missing, f"cycle {cycle}: {len(missing)} acknowledged rows lost, e.g. {missing[:5]}"
        pg.psql("SELECT bt_index_check('pgbench_accounts_pkey', true)")
        pg.psql("SELECT bt_index_check('acks_pkey', true)")
    out = pg.pgbench("-c", "4", "-j", "2", "-T", "3").stdout
    assert "number of failed transactions: 0" in out
    pg.stop()


def test_lock_stops_postgres_without_hanging_and_unlock_recovers(pg_volume):
    vol, pg = pg_volume
    as_pg(PG_BIN / "initdb", "-D", pg.data, "-A", "trust", "--no-sync")
    pg.start()
    pg.pgbench("-i", "-s", "1", "-q")
    pg.psql("CREATE TABLE users (id serial PRIMARY KEY, name text); "
            "INSERT INTO users (name) VALUES ('Alice'), ('Bob'), ('Charlie')")
    bench = subprocess.Popen(["runuser", "-u", "postgres", "--", str(PG_BIN / "pgbench"), "-h", str(pg.sock),
                              "-p", str(PORT), "-c", "2", "-T", "60", "postgres"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    postgres = pg.processes()
    t0 = time.monotonic()
    vol.ctl("lock")
    # The load ends with errors within seconds, never hangs.
    bench.wait(timeout=30)
    assert time.monotonic() - t0 < 30
    result = pg.psql("SELECT count(*) FROM users", check=False)
    assert result.returncode != 0
    # PostgreSQL PANICs on the failed I/O; whatever is left is stopped.
    pg.kill9(postgres)

    vol.ctl("unlock")
    pg.start()
    assert pg.psql("SELECT name FROM users ORDER BY id").stdout.split() == ["Alice", "Bob", "Charlie"]
    pg.psql("INSERT INTO users (name) VALUES ('David')")
    assert pg.psql("SELECT count(*) FROM users").stdout.strip() == "4"
    pg.stop()
