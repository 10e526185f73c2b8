#!/usr/bin/env python3
"""Managed-database benchmark (issue 6), all in one run against a release build:

1. time from CreateDBInstance to `available`, encrypted and unencrypted PostgreSQL;
2. pgbench (TPC-B-like, scale 10, 4 clients) TPS on an encrypted database vs an
   unencrypted one, alternating runs;
3. lock time: from DisableKey returning to the status being
   `inaccessible-encryption-credentials-recoverable` and to the first refused connection;
   recovery time: from EnableKey returning to `available` and the first served query.

Creations alternate encrypted / unencrypted; the extra instances are deleted before pgbench.

Usage: python3 bench/rds_bench.py [--runs 3] [--seconds 30]   (binary: KURA_BIN or target/release/kura)
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import kura_harness  # noqa: E402
from kura_harness import KuraServer, config_text  # noqa: E402

PASSWORD = "Passw0rd-bench"
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")


def wait_status(rds, instance, wanted, timeout=300, poll=0.05):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceStatus"]
        if status == wanted:
            return time.monotonic() - start
        time.sleep(poll)
    raise RuntimeError(f"{instance} never became {wanted}")


def conninfo(port, db="postgres"):
    return f"host=127.0.0.1 port={port} user=bench dbname={db} sslmode=disable"


def query_ok(port):
    out = subprocess.run(["psql", conninfo(port), "-X", "-A", "-t", "-c", "select 1"], capture_output=True, text=True,
                         env={**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "2"})
    return out.returncode == 0


def pgbench(port, args, seconds=None):
    cmd = [str(PG_BIN / "pgbench"), *args]
    if seconds:
        cmd += ["-T", str(seconds)]
    cmd.append(conninfo(port))
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": PASSWORD})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    for line in out.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    return None


def create(rds, name, encrypted, key=None):
    kwargs = dict(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t3.micro",
                  MasterUsername="bench", MasterUserPassword=PASSWORD, AllocatedStorage=20, BackupRetentionPeriod=0)
    if encrypted:
        kwargs.update(StorageEncrypted=True, KmsKeyId=key)
    started = time.monotonic()
    rds.create_db_instance(**kwargs)
    wait_status(rds, name, "available")
    elapsed = time.monotonic() - started
    port = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["Endpoint"]["Port"]
    return elapsed, port


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    release = pathlib.Path(os.environ.get("KURA_BIN", REPO / "target" / "release" / "kura"))
    if not release.exists():
        sys.exit("build first: cargo build --release -p kura")
    kura_harness.KURA_BIN = str(release)
    work = pathlib.Path(tempfile.mkdtemp(prefix="kura-rds-bench-"))
    os.chmod(work, 0o755)
    server = KuraServer(work / "data", config=config_text("[rds]\nkey_check_interval_secs = 60\n"))
    try:
        rds, kms = server.client("rds"), server.client("kms")
        key = kms.create_key(Description="bench")["KeyMetadata"]["KeyId"]
        create_times = {"encrypted": [], "unencrypted": []}
        ports = {}
        print(f"load average {os.getloadavg()}", flush=True)
        for i in range(args.runs):
            for label, encrypted in (("encrypted", True), ("unencrypted", False))[::1 if i % 2 == 0 else -1]:
                elapsed, port = create(rds, f"{label}-{i}", encrypted, key)
                create_times[label].append(elapsed)
                ports.setdefault(label, port)
        print(f"create -> available (s): " + ", ".join(
            f"{label} median {statistics.median(v):.2f} runs {[round(x, 2) for x in v]}" for label, v in create_times.items()),
            flush=True)
        for i in range(1, args.runs):
            for label in create_times:
                rds.delete_db_instance(DBInstanceIdentifier=f"{label}-{i}", SkipFinalSnapshot=True)

        for label, port in ports.items():
            pgbench(port, ["-i", "-s", "10", "-q"])
        tps = {"encrypted": [], "unencrypted": []}
        for run in range(args.runs):
            for label, port in list(ports.items())[::1 if run % 2 == 0 else -1]:
                tps[label].append(pgbench(port, ["-c", "4", "-j", "2", "-n"], seconds=args.seconds))
                print(f"  run {run + 1} {label}: {tps[label][-1]:.0f} tps", flush=True)
        enc, plain = statistics.median(tps["encrypted"]), statistics.median(tps["unencrypted"])
        print(f"pgbench TPC-B scale 10, 4 clients, {args.seconds}s: encrypted median {enc:.0f} tps {tps['encrypted']}, "
              f"unencrypted median {plain:.0f} tps {tps['unencrypted']}, ratio {enc / plain:.2f}")

        port = ports["encrypted"]
        lock, refused, recover, served = [], [], [], []
        for _ in range(args.runs):
            kms.disable_key(KeyId=key)
            t0 = time.monotonic()
            lock.append(wait_status(rds, "encrypted-0", "inaccessible-encryption-credentials-recoverable", poll=0.01))
            while query_ok(port):
                time.sleep(0.01)
            refused.append(time.monotonic() - t0)
            kms.enable_key(KeyId=key)
            t0 = time.monotonic()
            recover.append(wait_status(rds, "encrypted-0", "available", poll=0.01))
            while not query_ok(port):
                time.sleep(0.01)
            served.append(time.monotonic() - t0)
        for name, values in (("disable -> locked status", lock), ("disable -> connection refused", refused),
                             ("enable -> available status", recover), ("enable -> query served", served)):
            print(f"{name}: median {statistics.median(values) * 1000:.0f} ms runs {[round(v * 1000) for v in values]}")
        print(f"load average {os.getloadavg()}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
