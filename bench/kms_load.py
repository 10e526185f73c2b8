#!/usr/bin/env python3
"""KMS load benchmark: requests/s and latency of Encrypt, Decrypt and GenerateDataKey over
loopback with SigV4, against kura and against moto_server, side by side in one run.

The load generator is wrk replaying one SigV4-signed request per connection (AWS accepts
the same signed request again within its five-minute window), so signing cost is not
charged to the client and the generator is not the bottleneck.

With --authz, a second kura server whose bench user has 10 attached identity policies and
whose key has a 20-statement key policy is measured too, interleaved with the plain one
(each run measures both, in alternating order).

Usage: python3 bench/kms_load.py [--duration 10] [--runs 3] [--connections 16] [--skip-moto] [--authz]
Needs: a release build (cargo build --release -p kura, or KURA_BIN=path), wrk, boto3, moto[server]
(scripts/deps.sh bench installs them).
"""

import argparse
import base64
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
from kura_harness import KuraServer, REGION, USERS  # noqa: E402

KURA_RELEASE = pathlib.Path(os.environ.get("KURA_BIN", REPO / "target" / "release" / "kura"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signed_request(endpoint, key_id, secret, target, body):
    credentials = botocore.credentials.Credentials(key_id, secret)
    request = botocore.awsrequest.AWSRequest(method="POST", url=endpoint + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    botocore.auth.SigV4Auth(credentials, "kms", REGION).add_auth(request)
    return request.prepare()


def wrk_script(prepared, path):
    def lua(s):
        return json.dumps(s)
    lines = ['wrk.method = "POST"', f"wrk.body = {lua(prepared.body.decode() if isinstance(prepared.body, bytes) else prepared.body)}"]
    for name, value in prepared.headers.items():
        lines.append(f"wrk.headers[{lua(name)}] = {lua(value if isinstance(value, str) else value.decode())}")
    lines.append("""
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
""")
    path.write_text("\n".join(lines))


def run_wrk(endpoint, script, duration, connections, threads):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "-s", str(script), endpoint + "/"],
                         capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+) non2xx=(\d+) p50_us=(\d+) p99_us=(\d+)", out.stdout)
    if not match:
        raise RuntimeError(f"wrk output not understood:\n{out.stdout}\n{out.stderr}")
    requests, duration_us, errors, non2xx, p50, p99 = map(int, match.groups())
    if errors or non2xx:
        raise RuntimeError(f"wrk saw errors={errors} non-2xx={non2xx}: the benchmark would be meaningless")
    return requests / (duration_us / 1e6), p50 / 1000.0, p99 / 1000.0


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bodies(client, key_id):
    plaintext = base64.b64encode(b"x" * 64).decode()
    blob = client.encrypt(KeyId=key_id, Plaintext=b"x" * 64)["CiphertextBlob"]
    return {
        "Encrypt": json.dumps({"KeyId": key_id, "Plaintext": plaintext}),
        "Decrypt": json.dumps({"CiphertextBlob": base64.b64encode(blob).decode()}),
        "GenerateDataKey": json.dumps({"KeyId": key_id, "KeySpec": "AES_256"}),
    }


def heavy_authorization(server, client, key):
    """A 20-statement key policy and 10 attached identity policies for the bench user
    (AdministratorAccess and 9 customer managed ones),
    every statement a realistic one that does not match before the last (so all are
    evaluated)."""
    account = "111111111111"
    user = f"arn:aws:iam::{account}:user/administrator"
    statements = [{"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                   "Action": "kms:*", "Resource": "*"}]
    for i in range(18):
        statements.append({"Sid": f"Other{i}", "Effect": "Allow", "Principal": {"AWS": user},
                           "Action": ["kms:Decrypt", "kms:ReEncrypt*"], "Resource": "*",
                           "Condition": {"StringEquals": {f"kms:EncryptionContext:app{i}": f"value{i}"}}})
    statements.append({"Sid": "DenyOutsideHours", "Effect": "Deny", "Principal": {"AWS": "*"},
                       "Action": "kms:*", "Resource": "*",
                       "Condition": {"DateLessThan": {"aws:CurrentTime": "2001-01-01T00:00:00Z"}}})
    client.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))
    iam = server.client("iam")
    # AdministratorAccess is already attached; 9 more make the 10 AWS allows per user.
    for i in range(9):
        document = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": [f"kms:Describe*", "kms:List*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "kms:ScheduleKeyDeletion", "Resource": f"arn:aws:kms:*:{account}:key/*",
             "Condition": {"StringLike": {"aws:username": f"intern-{i}*"}}},
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey*"], "Resource": "*",
             "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "10.0.0.0/8"]}}}]}
        arn = iam.create_policy(PolicyName=f"bench-{i}", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="administrator", PolicyArn=arn)


def measure(name, endpoint, key_id, secret, client, args, workdir, prepare=None):
    results = {}
    key = client.create_key(Description="bench")["KeyMetadata"]["KeyId"]
    if prepare:
        prepare(key)
    for operation, body in bodies(client, key).items():
        if args.encrypt_only and operation != "Encrypt":
            continue
        samples = []
        for _ in range(args.runs):
            prepared = signed_request(endpoint, key_id, secret, f"TrentService.{operation}", body)
            script = workdir / f"{name}-{operation}.lua"
            wrk_script(prepared, script)
            samples.append(run_wrk(endpoint, script, args.duration, args.connections, args.threads))
        rps = statistics.median(s[0] for s in samples)
        p50 = statistics.median(s[1] for s in samples)
        p99 = statistics.median(s[2] for s in samples)
        results[operation] = (rps, p50, p99, samples)
        print(f"{name:6} {operation:16} {rps:10.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  runs {[round(s[0]) for s in samples]}",
              flush=True)
    return results


def measure_interleaved(sides, key_id, secret, args, workdir):
    """sides: name -> (endpoint, kms client, prepare(key) or None, server pid). Every run
    measures every side for each operation, the order of the sides rotating from run to run.
    Besides requests/s, it records the server's CPU time per request (µs), which the load
    of a shared machine disturbs much less than the rate."""
    requests = {}
    for name, (endpoint, client, prepare, _) in sides.items():
        key = client.create_key(Description="bench")["KeyMetadata"]["KeyId"]
        if prepare:
            prepare(key)
        for operation, body in bodies(client, key).items():
            if args.encrypt_only and operation != "Encrypt":
                continue
            requests[name, operation] = body
    names = list(sides)
    operations = list(dict.fromkeys(op for _, op in requests))
    samples = {key: [] for key in requests}
    for run in range(args.runs):
        for operation in operations:
            for name in names[run % len(names):] + names[:run % len(names)]:
                # signed afresh for each run: a signature is accepted for five minutes
                prepared = signed_request(sides[name][0], key_id, secret, f"TrentService.{operation}",
                                          requests[name, operation])
                script = workdir / f"{name}-{operation}.lua"
                wrk_script(prepared, script)
                cpu = cpu_seconds(sides[name][3])
                sample = run_wrk(sides[name][0], script, args.duration, args.connections, args.threads)
                cpu_us = (cpu_seconds(sides[name][3]) - cpu) / (sample[0] * args.duration) * 1e6
                sample = (*sample, cpu_us)
                samples[name, operation].append(sample)
                print(f"run {run + 1} {name:10} {operation:16} {sample[0]:10.0f} req/s  p50 {sample[1]:6.2f} ms  "
                      f"p99 {sample[2]:6.2f} ms  server CPU {cpu_us:5.1f} µs/req", flush=True)
    results = {name: {} for name in names}
    for (name, operation), s in samples.items():
        results[name][operation] = (statistics.median(x[0] for x in s), statistics.median(x[1] for x in s),
                                    statistics.median(x[2] for x in s), s, statistics.median(x[3] for x in s))
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-moto", action="store_true")
    parser.add_argument("--authz", action="store_true",
                        help="also measure with a 20-statement key policy and 10 attached identity policies")
    parser.add_argument("--encrypt-only", action="store_true")
    args = parser.parse_args()
    if not KURA_RELEASE.exists():
        sys.exit("build first: cargo build --release -p kura")
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: scripts/deps.sh bench")
    os.environ["KURA_BIN"] = str(KURA_RELEASE)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kura-bench-"))
    import kura_harness
    kura_harness.KURA_BIN = str(KURA_RELEASE)
    servers = {"kura": KuraServer(workdir / "kura", extra_args=["--log-format", "text"])}
    if args.authz:
        servers["kura+authz"] = KuraServer(workdir / "kura-authz", extra_args=["--log-format", "text"])
    _, _, key_id, secret, _ = USERS["admin_a"]
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()}; wrk -t{args.threads} "
          f"-c{args.connections} -d{args.duration}s, median of {args.runs} runs", flush=True)
    heavy = None
    try:
        sides = {}
        for name, server in servers.items():
            client = server.client("kms")
            prepare = (lambda key, server=server, client=client: heavy_authorization(server, client, key)) \
                if name == "kura+authz" else None
            sides[name] = (server.endpoint, client, prepare, server.process.pid)
        results = measure_interleaved(sides, key_id, secret, args, workdir)
        kura = results["kura"]
        heavy = results.get("kura+authz")
    finally:
        for server in servers.values():
            server.stop()
    print(f"load average after the kura runs: {os.getloadavg()}", flush=True)

    moto = None
    if not args.skip_moto:
        port = free_port()
        moto_process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            client = boto3.client("kms", endpoint_url=endpoint, region_name=REGION,
                                  aws_access_key_id=key_id, aws_secret_access_key=secret)
            moto = measure("moto", endpoint, key_id, secret, client, args, workdir)
        finally:
            moto_process.terminate()
            moto_process.wait()

    if heavy:
        print("\n| operation | default req/s | heavy req/s | change of medians | median of per-run changes "
              "| default server CPU µs/req | heavy server CPU µs/req | CPU change |")
        print("|---|---|---|---|---|---|---|---|")
        for operation, (rps, _, _, runs, cpu) in heavy.items():
            base, _, _, base_runs, base_cpu = kura[operation]
            paired = statistics.median(b[0] / a[0] - 1 for a, b in zip(base_runs, runs))
            print(f"| {operation} | {base:,.0f} | {rps:,.0f} | {100 * (rps - base) / base:+.1f}% | {100 * paired:+.1f}% "
                  f"| {base_cpu:.1f} | {cpu:.1f} | {100 * (cpu - base_cpu) / base_cpu:+.1f}% |")

    print("\n| operation | kura req/s | kura p50 ms | kura p99 ms | moto req/s | moto p50 ms | moto p99 ms | kura/moto |")
    print("|---|---|---|---|---|---|---|---|")
    for operation, (rps, p50, p99, *_) in kura.items():
        if moto:
            m_rps, m_p50, m_p99, _ = moto[operation]
            print(f"| {operation} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {m_rps:.0f} | {m_p50:.2f} | {m_p99:.2f} | {rps / m_rps:.0f}x |")
        else:
            print(f"| {operation} | {rps:.0f} | {p50:.2f} | {p99:.2f} | - | - | - | - |")


if __name__ == "__main__":
    main()
