#!/usr/bin/env python3
"""Encrypted volume benchmarks, all in one run (numbers in BENCHMARKS.md come from this).

  python3 bench/volume_bench.py [--seconds 60] [--reps 3] [--ablation] [--out results.json]

Needs root, /dev/fuse, the release binary (cargo build --release -p kura), and
`scripts/deps.sh bench` (postgresql-15, gocryptfs, fio, fuse3). It starts its own kura
server, creates a KMS key and a volume, and measures, on this machine:

- pgbench (scale 10, 4 clients, -j 2): TPC-B-like and select-only, PGDATA on plain disk,
  on a kura volume mounted as the database service mounts it (no writeback cache) and on
  gocryptfs, `--reps` times each in rotating order (medians);
- with --ablation, the same runs on fresh kura volumes with one lever changed at a time
  (the writeback cache on, as `kura volume mount` has it by default; 1 or 4 FUSE
  threads; no torn-write journal);
- fio (`--reps` times each, rotating order): sequential write and read (1 MiB blocks,
  1 GiB file, caches dropped before reads), 4 KiB random writes each followed by
  fdatasync, and buffered 4 KiB random writes;
- raw AES-256-GCM speed of the volume's block cipher on this CPU (the ceiling), and
  `openssl speed` on 4 KiB blocks for comparison;
- time from `lock` to the first refused read, and from `unlock` to the first served read.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
KURA = os.environ.get("KURA_BIN", str(REPO / "target" / "release" / "kura"))
PGBENCH_SH = str(REPO / "bench" / "volume_pgbench.sh")
# The options the database service mounts its volumes with (kura-rds `database_mount`).
DATABASE_MOUNT = ["--no-writeback-cache"]


def sh(*args, **kw):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


class Kura:
    def __init__(self, root):
        self.root = root
        self.data = root / "kura-data"
        self.log = open(root / "kura.log", "ab")
        self.proc = subprocess.Popen([KURA, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data)],
                                     stdout=subprocess.PIPE, stderr=self.log)
        banner = b""
        while b"kms list-keys" not in banner:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                raise RuntimeError("kura serve did not start")
            banner += chunk
        self.endpoint = banner.decode().split(" on ", 1)[1].split()[0]
        self.env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=str(self.data / "credentials"),
                        AWS_DEFAULT_REGION="us-east-1", KURA_LOG="warn")
        self.env.pop("AWS_ACCESS_KEY_ID", None)
        self.env.pop("AWS_SECRET_ACCESS_KEY", None)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class KuraVolume:
    def __init__(self, kura, root, name, *mount_args):
        self.kura = kura
        self.backing = root / f"{name}-backing"
        self.mnt = root / f"{name}-mnt"
        self.mnt.mkdir()
        self.sock = root / f"{name}.sock"
        key = json.loads(subprocess.run(
            ["aws", "--endpoint-url", kura.endpoint, "kms", "create-key", "--output", "json"],
            check=True, capture_output=True, text=True, env=kura.env).stdout)["KeyMetadata"]["KeyId"]
        sh(KURA, "volume", "create", "--key-id", key, "--backing-dir", self.backing, "--endpoint-url", kura.endpoint,
           env=kura.env)
        self.proc = subprocess.Popen(
            [KURA, "volume", "mount", "--backing-dir", str(self.backing), "--mount-point", str(self.mnt),
             "--control-socket", str(self.sock), "--endpoint-url", kura.endpoint, *mount_args],
            stdout=subprocess.PIPE, stderr=open(root / f"{name}-mount.log", "ab"), env=kura.env)
        line = self.proc.stdout.readline().decode()
        if "mounted at" not in line:
            raise RuntimeError(f"mount failed: {line}")

    def control(self, request):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(self.sock))
        s.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return json.loads(data)

    def cpu_seconds(self):
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def unmount(self):
        out = subprocess.run([KURA, "volume", "unmount", "--control-socket", str(self.sock), "--force"],
                             capture_output=True, text=True)
        code = self.proc.wait(timeout=60)
        if out.returncode != 0:
            # `kura volume unmount` can report an error although the volume did unmount (the
            # mount process may exit before it answers); only a volume still mounted is fatal.
            print(f"  warning: unmount exited {out.returncode} ({out.stderr.strip()}); mount process exited "
                  f"{code}, still mounted: {os.path.ismount(self.mnt)}", flush=True)
            if os.path.ismount(self.mnt):
                raise RuntimeError(f"{self.mnt} is still mounted")


class Gocryptfs:
    def __init__(self, root):
        self.cipher = root / "gocryptfs-cipher"
        self.mnt = root / "gocryptfs-mnt"
        self.cipher.mkdir()
        self.mnt.mkdir()
        pw = root / "gocryptfs-pass"
        pw.write_text("benchmark-password\n")
        sh("gocryptfs", "-init", "-q", "-passfile", pw, self.cipher)
        # gocryptfs daemonizes; its daemon keeps inherited pipes open, so do not capture.
        subprocess.run(["gocryptfs", "-q", "-passfile", str(pw), "-allow_other", "-nosyslog", str(self.cipher),
                        str(self.mnt)], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def unmount(self):
        sh("fusermount3", "-u", self.mnt)


def drop_caches():
    os.sync()
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


def pgbench(label, directory, seconds):
    out = sh(PGBENCH_SH, label, directory, seconds)
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {json.dumps(result)}", flush=True)
    return result


def fio(label, directory):
    """Sequential write/read MB/s and 4 KiB random-write IOPS."""
    d = pathlib.Path(directory) / "fio"
    d.mkdir(parents=True, exist_ok=True)
    common = ["fio", "--directory", str(d), "--ioengine=psync", "--numjobs=1", "--output-format=json",
              "--group_reporting"]

    def run(*args):
        return json.loads(sh(*common, *args))["jobs"][0]

    r = {"label": label}
    job = run("--name=seqwrite", "--rw=write", "--bs=1M", "--size=1G", "--end_fsync=1")
    r["seq_write_MBps"] = job["write"]["bw_bytes"] / 1e6
    drop_caches()
    job = run("--name=seqwrite", "--rw=read", "--bs=1M", "--size=1G")
    r["seq_read_MBps"] = job["read"]["bw_bytes"] / 1e6
    job = run("--name=randsync", "--rw=randwrite", "--bs=4k", "--size=256M", "--runtime=20", "--time_based",
              "--fdatasync=1")
    r["randwrite_fdatasync_iops"] = job["write"]["iops"]
    job = run("--name=randbuf", "--rw=randwrite", "--bs=4k", "--size=256M", "--runtime=20", "--time_based",
              "--end_fsync=1")
    r["randwrite_buffered_iops"] = job["write"]["iops"]
    shutil.rmtree(d)
    print(f"  {json.dumps(r)}", flush=True)
    return r


def aes_speed():
    # the example built next to the kura binary (same target directory)
    exe = pathlib.Path(KURA).parent / "examples" / "aes_speed"
    if not exe.exists():
        subprocess.run(["cargo", "build", "--release", "-p", "kura-volume", "--example", "aes_speed"], check=True,
                       cwd=REPO)
    result = json.loads(sh(exe, "2"))
    out = sh("openssl", "speed", "-seconds", "3", "-bytes", "4096", "-evp", "aes-256-gcm")
    # last line: "AES-256-GCM  <kB/s for 4096 bytes>k"
    result["openssl_4k_MBps"] = float(out.strip().splitlines()[-1].split()[-1].rstrip("k")) * 1000 / 1e6
    print(f"  {json.dumps(result)}", flush=True)
    return result


def lock_latency(vol, kura, reps=5):
    """From sending `lock` to the first refused read; from `unlock` done to the first served read."""
    sys.setswitchinterval(0.0002)  # the probing thread must not wait 5 ms for the GIL
    path = vol.mnt / "lockprobe"
    path.write_bytes(os.urandom(1 << 20))
    results = []
    for _ in range(reps):
        fd = os.open(path, os.O_RDONLY)
        os.pread(fd, 4096, 0)
        refused_at = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    os.pread(fd, 4096, 0)
                except OSError:
                    refused_at.append(time.monotonic())
                    return

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        vol.control({"op": "lock"})
        t1 = time.monotonic()
        t.join(timeout=5)
        stop.set()
        lock_to_refused = refused_at[0] - t0 if refused_at else None
        # unlock through the CLI (a KMS Decrypt included), then the first read
        u0 = time.monotonic()
        sh(KURA, "volume", "unlock", "--backing-dir", vol.backing, "--control-socket", vol.sock,
           "--endpoint-url", kura.endpoint, env=kura.env)
        u1 = time.monotonic()
        os.pread(fd, 4096, 0)
        u2 = time.monotonic()
        os.close(fd)
        results.append({"lock_call_ms": (t1 - t0) * 1e3,
                        "lock_to_first_refused_ms": lock_to_refused * 1e3 if lock_to_refused is not None else None,
                        "unlock_cli_with_kms_ms": (u1 - u0) * 1e3, "unlock_to_first_served_ms": (u2 - u1) * 1e3})
    med = {k: statistics.median(r[k] for r in results if r[k] is not None) for k in results[0]}
    print(f"  {json.dumps(med)}", flush=True)
    return {"median": med, "runs": results}


def median_by(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--ablation-reps", type=int, default=1)
    ap.add_argument("--skip-fio", action="store_true")
    ap.add_argument("--out", default="volume_bench_results.json")
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")

    root = pathlib.Path(tempfile.mkdtemp(prefix="kura-volume-bench-", dir=args.workdir))
    root.chmod(0o755)
    results = {"machine": {"cpu": sh("sh", "-c", "grep -m1 'model name' /proc/cpuinfo").split(":")[1].strip(),
                           "cores": os.cpu_count(), "kernel": os.uname().release},
               "seconds": args.seconds, "reps": args.reps, "loadavg_start": os.getloadavg()}
    kura = Kura(root)
    # As the database service mounts its volumes (see `database_mount` in kura-rds).
    vol = KuraVolume(kura, root, "kura", *DATABASE_MOUNT)
    gc = Gocryptfs(root)
    (root / "plain").mkdir()
    targets = {"plain": root / "plain", "kura": vol.mnt, "gocryptfs": gc.mnt}
    try:
        print("raw AES-256-GCM (one core):", flush=True)
        results["aes"] = aes_speed()

        print("pgbench:", flush=True)
        rows = []
        order = list(targets)
        for rep in range(args.reps):
            for label in order[rep % 3:] + order[:rep % 3]:
                cpu0 = vol.cpu_seconds()
                row = pgbench(label, targets[label] / "pg", args.seconds)
                if label == "kura":
                    row["kura_daemon_cpu_s"] = vol.cpu_seconds() - cpu0
                rows.append(row)
        results["pgbench"] = rows
        summary = {}
        for label in targets:
            mine = [r for r in rows if r["label"] == label]
            summary[label] = {k: median_by(mine, k) for k in
                              ("tpcb_tps", "select_tps", "tpcb_lat_ms", "select_lat_ms", "initdb_s", "load_s")}
        for label in ("kura", "gocryptfs"):
            summary[label]["tpcb_vs_plain"] = summary[label]["tpcb_tps"] / summary["plain"]["tpcb_tps"]
            summary[label]["select_vs_plain"] = summary[label]["select_tps"] / summary["plain"]["select_tps"]
        results["pgbench_median"] = summary
        print(json.dumps(summary, indent=1), flush=True)

        if args.ablation:
            # Each on a fresh volume, a fresh default one included, so they compare among themselves.
            print("ablation (fresh kura volumes, one lever changed at a time):", flush=True)
            ablation = []
            base = DATABASE_MOUNT
            levers = [("kura", base), ("kura-writeback-cache", []),
                      ("kura-1-thread", base + ["--threads", "1"]), ("kura-4-threads", base + ["--threads", "4"]),
                      ("kura-no-journal", base + ["--unsafe-no-journal"])]
            for rep in range(args.ablation_reps):
                for name, flags in levers[rep % len(levers):] + levers[:rep % len(levers)]:
                    v = KuraVolume(kura, root, f"{name}-{rep}", *flags)
                    try:
                        cpu0 = v.cpu_seconds()
                        row = pgbench(name, v.mnt / "pg", args.seconds)
                        row["kura_daemon_cpu_s"] = v.cpu_seconds() - cpu0
                        ablation.append(row)
                    finally:
                        v.unmount()
            results["ablation"] = ablation

        if not args.skip_fio:
            print("fio:", flush=True)
            rows = []
            for rep in range(args.reps):
                for label in order[rep % 3:] + order[:rep % 3]:
                    rows.append(fio(label, targets[label]))
            results["fio"] = rows
            results["fio_median"] = {label: {k: median_by([r for r in rows if r["label"] == label], k)
                                             for k in rows[0] if k != "label"} for label in targets}
            print(json.dumps(results["fio_median"], indent=1), flush=True)

        print("lock / unlock latency (kura):", flush=True)
        results["lock"] = lock_latency(vol, kura)
    finally:
        results["loadavg_end"] = os.getloadavg()
        vol.unmount()
        gc.unmount()
        kura.stop()
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"results written to {args.out}; scratch in {root}", flush=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
