#!/usr/bin/env python3
"""What the audit trail costs: KMS Encrypt requests/s with auditing off and on, in one run.

Starts three release servers on the same machine: `--no-audit`; the default audit trail
(`--audit-sync mutating`: every call recorded and chained; mutating calls flushed with
fdatasync before their answer, read-only calls written before their answer and flushed
within 5 ms); and `--audit-sync all` (every call waits for its fdatasync). It replays the
same SigV4-signed request against each with wrk, rotating the order of the servers from
run to run so that drift of the shared machine hits every side alike. Besides requests/s it
reports the server's CPU time per request, which the load of a shared machine disturbs less.

With `--baseline PATH` it also starts an off and a default server from another build
(e.g. the previous commit's), in the same rotation, to compare two builds in one run.

Usage: python3 bench/audit_cost.py [--duration 6] [--runs 7] [--connections 16] [--operation Encrypt] [--skip-all]
       [--baseline path/to/other/kura]
Needs: a release build (cargo build --release -p kura, or KURA_BIN=path), wrk, boto3 (scripts/deps.sh bench).
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
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "python"))
import kms_load  # noqa: E402
import kura_harness  # noqa: E402
from kura_harness import KuraServer, USERS  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--operation", default="Encrypt", choices=["Encrypt", "Decrypt", "GenerateDataKey"])
    parser.add_argument("--skip-all", action="store_true", help="do not measure --audit-sync all")
    parser.add_argument("--baseline", help="another kura binary whose off and mutating servers join the rotation")
    args = parser.parse_args()
    if not kms_load.KURA_RELEASE.exists():
        sys.exit("build first: cargo build --release -p kura")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: scripts/deps.sh bench")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kura-audit-bench-"))
    _, _, key_id, secret, _ = USERS["admin_a"]
    binary = str(kms_load.KURA_RELEASE)
    sides = {"off": (binary, ["--no-audit"]), "mutating": (binary, ["--audit-sync", "mutating"]),
             "all": (binary, ["--audit-sync", "all"])}
    if args.skip_all:
        del sides["all"]
    if args.baseline:
        sides["baseline off"] = (args.baseline, ["--no-audit"])
        sides["baseline mutating"] = (args.baseline, ["--audit-sync", "mutating"])
    servers = {}
    for name, (kura_bin, extra) in sides.items():
        kura_harness.KURA_BIN = kura_bin
        servers[name] = KuraServer(workdir / name.replace(" ", "-"), extra_args=["--log-format", "text", *extra])
    fs = subprocess.run(["df", "-T", str(workdir)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    print(f"machine: {os.cpu_count()} cpus; data directories on {fs[0]} ({fs[1]}); "
          f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s; {args.operation}; "
          f"{args.runs} runs per side, order rotated each run", flush=True)
    samples = {name: [] for name in sides}
    try:
        request_bodies = {}
        for name, server in servers.items():
            client = server.client("kms")
            key = client.create_key(Description="bench")["KeyMetadata"]["KeyId"]
            request_bodies[name] = kms_load.bodies(client, key)[args.operation]
        names = list(sides)
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                # signed afresh for each run: a signature is accepted for five minutes
                prepared = kms_load.signed_request(servers[name].endpoint, key_id, secret,
                                                   f"TrentService.{args.operation}", request_bodies[name])
                script = workdir / f"{name}.lua"
                kms_load.wrk_script(prepared, script)
                cpu = kms_load.cpu_seconds(servers[name].process.pid)
                rps, p50, p99 = kms_load.run_wrk(servers[name].endpoint, script, args.duration,
                                                 args.connections, args.threads)
                cpu_us = (kms_load.cpu_seconds(servers[name].process.pid) - cpu) / (rps * args.duration) * 1e6
                samples[name].append((rps, p50, p99, cpu_us))
                print(f"run {run + 1} {name:17}: {rps:8.0f} req/s  p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  "
                      f"server CPU {cpu_us:5.1f} µs/req", flush=True)
        # LookupEvents on the trail the load left (hundreds of MB): the newest page, and a
        # value that forces a scan of the whole trail.
        if "mutating" in servers:
            trail = servers["mutating"].client("cloudtrail")
            started = time.monotonic()
            newest = trail.lookup_events(MaxResults=50)["Events"]
            newest_ms = (time.monotonic() - started) * 1000
            started = time.monotonic()
            rare = trail.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateKey"}])
            rare_ms = (time.monotonic() - started) * 1000
            print(f"LookupEvents on the loaded trail: newest 50 in {newest_ms:.0f} ms ({len(newest)} events); "
                  f"EventName=CreateKey (whole trail scanned) in {rare_ms:.0f} ms ({len(rare['Events'])} event)")
    finally:
        for server in servers.values():
            server.stop()

    def med(name, i):
        return statistics.median(s[i] for s in samples[name])

    failed = False
    for name in sides:
        if name.endswith("off"):
            continue
        data_dir = workdir / name.replace(" ", "-")
        size = sum(p.stat().st_size for p in (data_dir / "audit").iterdir())
        started = time.monotonic()
        verify = subprocess.run([str(kms_load.KURA_RELEASE), "audit", "verify", "--data-dir", str(data_dir)],
                                capture_output=True, text=True)
        elapsed = time.monotonic() - started
        summary = [line for line in verify.stdout.splitlines() if line.startswith(("OK", "BROKEN"))]
        print(f"{name}: kura audit verify exit {verify.returncode} in {elapsed:.1f} s: {' '.join(summary)}; "
              f"trail {size / 1e6:.0f} MB")
        failed |= verify.returncode != 0

    # "cost" compares the medians; "paired cost" is the median of each run's cost against
    # the off server measured in the same run, which cancels drift of the machine between
    # runs (the off server's own rate moves by 10% from run to run on a shared machine).
    print(f"\n| audit | req/s (median) | cost | paired cost (median; per run) | p50 ms | p99 ms | "
          f"server CPU µs/req | runs req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sides:
        runs = " / ".join(f"{s[0]:,.0f}" for s in samples[name])
        off_name = "baseline off" if name.startswith("baseline") else "off"
        if name.endswith("off"):
            cost = paired = "-"
        else:
            cost = f"{100 * (1 - med(name, 0) / med(off_name, 0)):.1f}%"
            per_run = [100 * (1 - s[0] / o[0]) for s, o in zip(samples[name], samples[off_name])]
            paired = (f"{statistics.median(per_run):.1f}%; "
                      + " / ".join(f"{c:.0f}%" for c in per_run))
        print(f"| {name} | {med(name, 0):,.0f} | {cost} | {paired} | {med(name, 1):.2f} | "
              f"{med(name, 2):.2f} | {med(name, 3):.1f} | {runs} |")
    shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit("a trail written under load does not verify")


if __name__ == "__main__":
    main()
