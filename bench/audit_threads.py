#!/usr/bin/env python3
"""Where the audit trail's CPU goes: per-thread CPU time of one kura server under a wrk
Encrypt load, and the whole machine's busy time, per request.

Starts one release server (`--no-audit`, or `--audit-sync MODE`), replays a signed
Encrypt with wrk for the given time after a 2-second warm-up, and reads each thread's
user and system time from /proc before and after. Run it once per mode, alternating, to
compare: `audit.md`'s cost figures come from bench/audit_cost.py; this script says which
threads the difference lands on (request workers, the flusher, the segment preparer) and
how much lands outside kura (the kernel's softirq and writeback, wrk).

Usage: python3 bench/audit_threads.py off|mutating|all [--duration 8] [--connections 16]
       [--data-dir-parent /dev/shm]   (a tmpfs takes the disk out of the picture)
       [--perf perf.data]   (also samples the server with `perf record -g` meanwhile;
                             the sampling slows the load, so compare rates without it)
Needs: a release build (or KURA_BIN=path), wrk, boto3 (scripts/deps.sh bench).
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "python"))
import kms_load  # noqa: E402
import kura_harness  # noqa: E402
from kura_harness import KuraServer, USERS  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MACHINE_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def thread_times(pid):
    """{thread id: (name, user ticks, system ticks)} of a process."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = pathlib.Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        times[tid] = (name, int(fields[11]), int(fields[12]))
    return times


def machine_times():
    return [int(x) for x in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["off", "mutating", "all"])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--data-dir-parent", default=None)
    parser.add_argument("--perf", default=None, help="write a perf profile of the measured run here")
    args = parser.parse_args()
    kura_harness.KURA_BIN = str(kms_load.KURA_RELEASE)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kura-audit-threads-", dir=args.data_dir_parent))
    extra = ["--no-audit"] if args.mode == "off" else ["--audit-sync", args.mode]
    server = KuraServer(workdir / "data", extra_args=["--log-format", "text", *extra])
    try:
        _, _, key_id, secret, _ = USERS["admin_a"]
        client = server.client("kms")
        key = client.create_key(Description="bench")["KeyMetadata"]["KeyId"]
        prepared = kms_load.signed_request(server.endpoint, key_id, secret, "TrentService.Encrypt",
                                           kms_load.bodies(client, key)["Encrypt"])
        script = workdir / "encrypt.lua"
        kms_load.wrk_script(prepared, script)
        kms_load.run_wrk(server.endpoint, script, 2, args.connections, 1)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "--call-graph", "dwarf,16384",
                                     "-o", args.perf, "-p", str(server.process.pid)])
        threads_before, machine_before = thread_times(server.process.pid), machine_times()
        rps, p50, p99 = kms_load.run_wrk(server.endpoint, script, args.duration, args.connections, 1)
        if perf:
            perf.send_signal(2)
            perf.wait()
        threads_after, machine_after = thread_times(server.process.pid), machine_times()
        requests = rps * args.duration
        per_request = 1e6 / TICKS / requests
        print(f"{args.mode}: {rps:.0f} req/s, p50 {p50} ms, p99 {p99} ms")
        by_name = {}
        for tid, (name, user, system) in threads_after.items():
            _, user0, system0 = threads_before.get(tid, (name, 0, 0))
            total = by_name.setdefault(name, [0, 0])
            total[0] += user - user0
            total[1] += system - system0
        for name, (user, system) in sorted(by_name.items(), key=lambda item: -sum(item[1])):
            if user + system:
                print(f"  {name:18s} user {user * per_request:6.2f}  system {system * per_request:6.2f} µs/request")
        spent = [after - before for before, after in zip(machine_before, machine_after)]
        busy = sum(spent) - spent[3] - spent[4]
        print("  machine: " + ", ".join(f"{n} {100 * v / sum(spent):.1f}%" for n, v in zip(MACHINE_FIELDS, spent)))
        print(f"  machine busy: {busy * per_request:.2f} µs/request")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
