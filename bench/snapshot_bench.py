#!/usr/bin/env python3
"""Snapshot benchmark (issue 7), one run against a release build.

An encrypted PostgreSQL instance is filled with pgbench data (scale 10 by default, about
160 MB on disk). Then, repeated --runs times, each timed from the API call to `available`:

1. CreateDBSnapshot (ciphertext captured into the chunk store while the database serves);
2. CopyDBSnapshot under the same key (shares chunks);
3. CopyDBSnapshot under another key (decrypt + re-encrypt every file under a fresh data key);
4. RestoreDBInstanceFromDBSnapshot from the re-encrypted copy, to `available` and to the
   first answered query (no first-touch penalty: the image is written before start).

As the reference for 1-3, `cp -a` of the same backing directory followed by `sync` is
timed in the same run.

Usage: python3 bench/snapshot_bench.py [--runs 3] [--scale 10]   (binary: KURA_BIN or target/release/kura)
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import kura_harness  # noqa: E402
from kura_harness import KuraServer, config_text  # noqa: E402
from rds_bench import PASSWORD, PG_BIN, conninfo, create, query_ok, wait_status  # noqa: E402


def snapshot_available(rds, name, timeout=600):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        snapshot = rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]
        if snapshot["Status"] == "available":
            return
        if snapshot["Status"] == "failed":
            raise RuntimeError(f"snapshot {name} failed")
        time.sleep(0.05)
    raise RuntimeError(f"snapshot {name} never became available")


def timed(action):
    started = time.monotonic()
    action()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    kura_harness.KURA_BIN = os.environ.get("KURA_BIN", str(REPO / "target" / "release" / "kura"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="kura-snapshot-bench-"))
    server = KuraServer(work / "data", config=config_text("[rds]\nfirst_port = 35432\n"))
    try:
        rds, kms = server.client("rds"), server.client("kms")
        key_a = kms.create_key()["KeyMetadata"]["Arn"]
        key_b = kms.create_key()["KeyMetadata"]["Arn"]
        _, port = create(rds, "source", True, key_a)
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), conninfo(port)],
                       check=True, env=env, capture_output=True)
        subprocess.run(["psql", conninfo(port), "-X", "-c", "CHECKPOINT"], check=True, env=env, capture_output=True)
        resource = rds.describe_db_instances(DBInstanceIdentifier="source")["DBInstances"][0]["DbiResourceId"]
        backing = server.rds_dir / resource / "storage" / "backing"
        size_mb = sum(f.stat().st_size for f in backing.rglob("*") if f.is_file()) / 1e6
        results = {name: [] for name in ("cp -a + sync (reference)", "create snapshot", "copy, same key",
                                         "copy, another key (re-encrypt)", "restore to available",
                                         "restore to first query")}
        for run in range(args.runs):
            target = work / f"cp-{run}"
            results["cp -a + sync (reference)"].append(timed(lambda: (
                shutil.copytree(backing, target, symlinks=True), os.sync())))
            shutil.rmtree(target)
            snap, same, other = f"snap-{run}", f"same-{run}", f"other-{run}"
            results["create snapshot"].append(timed(lambda: (
                rds.create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier="source"),
                snapshot_available(rds, snap))))
            results["copy, same key"].append(timed(lambda: (
                rds.copy_db_snapshot(SourceDBSnapshotIdentifier=snap, TargetDBSnapshotIdentifier=same),
                snapshot_available(rds, same))))
            results["copy, another key (re-encrypt)"].append(timed(lambda: (
                rds.copy_db_snapshot(SourceDBSnapshotIdentifier=snap, TargetDBSnapshotIdentifier=other,
                                     KmsKeyId=key_b),
                snapshot_available(rds, other))))
            restored = f"restored-{run}"
            started = time.monotonic()
            rds.restore_db_instance_from_db_snapshot(DBInstanceIdentifier=restored, DBSnapshotIdentifier=other)
            wait_status(rds, restored, "available", poll=0.02)
            results["restore to available"].append(time.monotonic() - started)
            restored_port = rds.describe_db_instances(DBInstanceIdentifier=restored)["DBInstances"][0]["Endpoint"]["Port"]
            while not query_ok(restored_port):
                time.sleep(0.02)
            results["restore to first query"].append(time.monotonic() - started)
            rds.delete_db_instance(DBInstanceIdentifier=restored, SkipFinalSnapshot=True)
            for name in (snap, same, other):
                rds.delete_db_snapshot(DBSnapshotIdentifier=name)
            time.sleep(3)
        # Storage: ten snapshots of the database, 1% of pgbench_accounts rows (a contiguous
        # range) updated and checkpointed between them.
        chunks = server.rds_dir / "snapshots" / "chunks"

        def stored_mb():
            return sum(f.stat().st_size for f in chunks.rglob("*") if f.is_file()) / 1e6
        rows = 100000 * args.scale
        base_mb = stored_mb()
        for n in range(10):
            low = n * rows // 100
            subprocess.run(["psql", conninfo(port), "-X", "-c",
                            f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {low} AND aid <= {low + rows // 100}; CHECKPOINT"],
                           check=True, env=env, capture_output=True)
            rds.create_db_snapshot(DBSnapshotIdentifier=f"ten-{n}", DBInstanceIdentifier="source")
            snapshot_available(rds, f"ten-{n}")
        ten_mb = stored_mb() - base_mb
        print(f"ten snapshots, 1% of rows changed between them: {ten_mb:.0f} MB stored "
              f"({ten_mb / (10 * size_mb):.2f}x of ten full copies, {ten_mb / size_mb:.2f}x of one)")
        print(f"backing directory: {size_mb:.0f} MB (pgbench scale {args.scale}); {args.runs} runs; "
              f"{os.cpu_count()} CPUs")
        print("| operation | median s | MB/s |")
        print("|---|---|---|")
        for name, times in results.items():
            median = statistics.median(times)
            print(f"| {name} | {median:.2f} | {size_mb / median:.0f} |")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
