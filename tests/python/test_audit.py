"""The audit trail: every call recorded in CloudTrail's format, searchable with
`aws cloudtrail lookup-events`, tamper-evident (`kura audit verify`), durable across restarts
and kill -9, and free of plaintext, ciphertext and secrets."""

import base64
import concurrent.futures
import hashlib
import json
import math
import pathlib
import shutil
import subprocess
import time
import uuid

import boto3
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from kura_harness import (ACCOUNT_A, ACCOUNT_B, KURA_BIN, REGION, USERS, KuraServer, config_text, restart_shifted,
                          shifted_env)


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT_A = {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
          "Action": "kms:*", "Resource": "*"}


@pytest.fixture(scope="module")
def trail_server(tmp_path_factory):
    """A server of this module's own, so that its trail holds only these tests' calls."""
    server = KuraServer(tmp_path_factory.mktemp("audit") / "data")
    yield server
    server.stop()


def lookup_all(server, user="admin_a", **kwargs):
    """Every event LookupEvents returns for `user`'s account, following NextToken."""
    client = server.client("cloudtrail", user=user)
    events, token = [], None
    while True:
        args = dict(kwargs)
        if token:
            args["NextToken"] = token
        page = client.lookup_events(**args)
        events += page["Events"]
        token = page.get("NextToken")
        if not token:
            return events


def records(events):
    return [json.loads(e["CloudTrailEvent"]) for e in events]


def by_request_id(server, request_id, user="admin_a"):
    found = [r for r in records(lookup_all(server, user=user)) if r.get("requestID") == request_id]
    return found


def kura_cli(*args, check=False):
    return subprocess.run([KURA_BIN, *args], capture_output=True, text=True, timeout=120, check=check)


def verify(data_dir):
    return kura_cli("audit", "verify", "--data-dir", str(data_dir))


def export(data_dir, *extra):
    out = kura_cli("audit", "export", "--data-dir", str(data_dir), *extra, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_kms_calls_are_recorded_in_cloudtrail_format(trail_server):
    kms = trail_server.client("kms")
    created = kms.create_key(Description="audited")
    key = created["KeyMetadata"]
    encrypted = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"audit me",
                            EncryptionContext={"Department": "Engineering", "Project": "Alpha"})
    decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"],
                            EncryptionContext={"Department": "Engineering", "Project": "Alpha"})
    nobody = trail_server.client("kms", user="nobody_a")
    with pytest.raises(ClientError) as denied:
        nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert error_code(denied) == "AccessDeniedException"
    denied_id = denied.value.response["ResponseMetadata"]["RequestId"]

    events = lookup_all(trail_server, LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": key["Arn"]}])
    names = [e["EventName"] for e in events]
    # Newest first.
    assert names[:4] == ["Encrypt", "Decrypt", "Encrypt", "CreateKey"], names
    summary = events[2]
    assert summary["EventSource"] == "kms.amazonaws.com"
    assert summary["ReadOnly"] == "true"
    assert summary["Username"] == "administrator"
    assert summary["AccessKeyId"] == USERS["admin_a"][2]
    assert summary["Resources"] == [{"ResourceType": "AWS::KMS::Key", "ResourceName": key["Arn"]}]

    encrypt = json.loads(summary["CloudTrailEvent"])
    assert encrypt["requestID"] == encrypted["ResponseMetadata"]["RequestId"]
    assert encrypt["eventVersion"] == "1.11"
    assert encrypt["userIdentity"] == {
        "type": "IAMUser", "principalId": encrypt["userIdentity"]["principalId"],
        "arn": f"arn:aws:iam::{ACCOUNT_A}:user/administrator", "accountId": ACCOUNT_A,
        "accessKeyId": USERS["admin_a"][2], "userName": "administrator"}
    assert encrypt["eventSource"] == "kms.amazonaws.com"
    assert encrypt["eventName"] == "Encrypt"
    assert encrypt["awsRegion"] == REGION
    assert encrypt["sourceIPAddress"] == "127.0.0.1"
    assert "Boto3" in encrypt["userAgent"] or "Botocore" in encrypt["userAgent"]
    assert encrypt["requestParameters"]["encryptionContext"] == {"Department": "Engineering", "Project": "Alpha"}
    assert encrypt["requestParameters"]["keyId"] == key["KeyId"]
    assert encrypt["responseElements"] is None
    assert encrypt["readOnly"] is True
    assert encrypt["resources"] == [{"accountId": ACCOUNT_A, "type": "AWS::KMS::Key", "ARN": key["Arn"]}]
    assert encrypt["eventType"] == "AwsApiCall"
    assert encrypt["managementEvent"] is True
    assert encrypt["recipientAccountId"] == ACCOUNT_A
    assert encrypt["eventCategory"] == "Management"
    assert len(encrypt["eventID"]) == 36 and summary["EventId"] == encrypt["eventID"]
    assert "errorCode" not in encrypt and "sharedEventID" not in encrypt
    assert time.strptime(encrypt["eventTime"], "%Y-%m-%dT%H:%M:%SZ")

    decrypt = json.loads(events[1]["CloudTrailEvent"])
    assert decrypt["requestID"] == decrypted["ResponseMetadata"]["RequestId"]
    assert decrypt["requestParameters"]["encryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    create = json.loads(events[3]["CloudTrailEvent"])
    assert create["requestID"] == created["ResponseMetadata"]["RequestId"]
    assert create["readOnly"] is False and events[3]["ReadOnly"] == "false"

    [refused] = by_request_id(trail_server, denied_id)
    assert refused["errorCode"] == "AccessDeniedException"
    assert "is not authorized to perform: kms:Encrypt" in refused["errorMessage"]
    assert refused["userIdentity"]["userName"] == "nobody"
    assert refused["userIdentity"]["accessKeyId"] == USERS["nobody_a"][2]
    assert events[0]["EventId"] == refused["eventID"]


def test_cross_account_use_is_recorded_in_both_accounts(trail_server):
    kms = trail_server.client("kms")
    shared = kms.create_key(Description="shared with B", Policy=policy(
        ROOT_A,
        {"Sid": "Allow account B", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}))["KeyMetadata"]
    private = kms.create_key(Description="not shared")["KeyMetadata"]
    outsider = trail_server.client("kms", user="admin_b")
    used = outsider.encrypt(KeyId=shared["Arn"], Plaintext=b"cross", EncryptionContext={"from": "b"})
    used_id = used["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as denied:
        outsider.encrypt(KeyId=private["Arn"], Plaintext=b"no")
    assert error_code(denied) == "AccessDeniedException"
    denied_id = denied.value.response["ResponseMetadata"]["RequestId"]

    [in_b] = by_request_id(trail_server, used_id, user="admin_b")
    [in_a] = by_request_id(trail_server, used_id, user="admin_a")
    assert in_b["recipientAccountId"] == ACCOUNT_B and in_a["recipientAccountId"] == ACCOUNT_A
    assert in_a["sharedEventID"] == in_b["sharedEventID"]
    assert in_a["eventID"] != in_b["eventID"]
    assert in_b["userIdentity"]["arn"] == f"arn:aws:iam::{ACCOUNT_B}:user/administrator"
    assert in_a["userIdentity"]["type"] == "AWSAccount"
    assert in_a["userIdentity"]["accountId"] == ACCOUNT_B
    for record in (in_a, in_b):
        assert record["resources"] == [{"accountId": ACCOUNT_A, "type": "AWS::KMS::Key", "ARN": shared["Arn"]}]
        assert record["requestParameters"]["encryptionContext"] == {"from": "b"}

    # Refused for access: only in the caller's account, as AWS does.
    [refused] = by_request_id(trail_server, denied_id, user="admin_b")
    assert refused["errorCode"] == "AccessDeniedException"
    assert "sharedEventID" not in refused
    assert by_request_id(trail_server, denied_id, user="admin_a") == []


def test_each_account_sees_only_its_own_events_and_lookup_needs_permission(trail_server):
    trail_server.client("kms", user="admin_b").list_keys()
    for user, account in (("admin_a", ACCOUNT_A), ("admin_b", ACCOUNT_B), ("reader_a", ACCOUNT_A)):
        seen = records(lookup_all(trail_server, user=user))
        assert seen, user
        assert {r["recipientAccountId"] for r in seen} == {account}, user
    nobody = trail_server.client("cloudtrail", user="nobody_a")
    with pytest.raises(ClientError) as denied:
        nobody.lookup_events()
    assert error_code(denied) == "AccessDeniedException"
    assert "cloudtrail:LookupEvents" in denied.value.response["Error"]["Message"]
    # LookupEvents calls are recorded too, refused ones included.
    [refused] = by_request_id(trail_server, denied.value.response["ResponseMetadata"]["RequestId"])
    assert refused["eventSource"] == "cloudtrail.amazonaws.com"
    assert refused["eventName"] == "LookupEvents"
    assert refused["readOnly"] is True
    assert refused["errorCode"] == "AccessDeniedException"
    mine = lookup_all(trail_server, LookupAttributes=[{"AttributeKey": "EventSource",
                                                        "AttributeValue": "cloudtrail.amazonaws.com"}])
    assert mine and all(e["EventName"] == "LookupEvents" for e in mine)


def test_lookup_attributes_paging_and_errors(trail_server):
    kms = trail_server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    for _ in range(5):
        kms.describe_key(KeyId=key["KeyId"])
    client = trail_server.client("cloudtrail")
    attribute = [{"AttributeKey": "ResourceName", "AttributeValue": key["Arn"]}]
    first = client.lookup_events(LookupAttributes=attribute, MaxResults=2)
    assert len(first["Events"]) == 2 and "NextToken" in first
    everything = lookup_all(trail_server, LookupAttributes=attribute, MaxResults=2)
    assert [e["EventName"] for e in everything] == ["DescribeKey"] * 5 + ["CreateKey"]
    assert len({e["EventId"] for e in everything}) == 6

    for key_name, value, expected in (("EventName", "DescribeKey", "DescribeKey"),
                                      ("ReadOnly", "false", None), ("Username", "administrator", None),
                                      ("AccessKeyId", USERS["admin_a"][2], None),
                                      ("ResourceType", "AWS::KMS::Key", None)):
        found = client.lookup_events(LookupAttributes=[{"AttributeKey": key_name, "AttributeValue": value}],
                                     MaxResults=50)["Events"]
        assert found, key_name
        if expected:
            assert {e["EventName"] for e in found} == {expected}
    assert all(e["ReadOnly"] == "false" for e in client.lookup_events(
        LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "false"}])["Events"])
    one = everything[3]
    by_id = client.lookup_events(LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": one["EventId"]}])
    assert [e["EventId"] for e in by_id["Events"]] == [one["EventId"]]

    # Time window: nothing in the future, everything of this key in the last hour.
    now = time.time()
    assert client.lookup_events(StartTime=now + 3600, EndTime=now + 7200)["Events"] == []
    assert len(lookup_all(trail_server, LookupAttributes=attribute, StartTime=now - 3600, EndTime=now + 60)) == 6

    for kwargs, code in (
        ({"MaxResults": 0}, "InvalidMaxResultsException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"LookupAttributes": attribute * 2}, "InvalidLookupAttributesException"),
        ({"LookupAttributes": [{"AttributeKey": "Colour", "AttributeValue": "x"}]}, "InvalidLookupAttributesException"),
        ({"StartTime": now, "EndTime": now - 60}, "InvalidTimeRangeException"),
        ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
        ({"NextToken": first["NextToken"]}, "InvalidNextTokenException"),  # other parameters
    ):
        with pytest.raises(ClientError) as e:
            client.lookup_events(**kwargs)
        assert error_code(e) == code, kwargs
    with pytest.raises(ClientError) as e:
        client.describe_trails()
    assert error_code(e) == "UnsupportedOperationException"
    # The digest verification key, as `kura audit verify` prints it.
    [public] = client.list_public_keys()["PublicKeyList"]
    assert len(public["Value"]) == 44 and len(public["Fingerprint"]) == 32
    verified = verify(trail_server.data_dir)
    assert public["Value"][12:].hex() in verified.stdout and public["Fingerprint"] in verified.stdout

    # The aws CLI (v2), which sends the namespaced X-Amz-Target and pages by itself.
    out = json.loads(trail_server.aws("cloudtrail", "lookup-events", "--lookup-attributes",
                                      f"AttributeKey=ResourceName,AttributeValue={key['Arn']}").stdout)
    assert [e["EventName"] for e in out["Events"]] == ["DescribeKey"] * 5 + ["CreateKey"]
    assert json.loads(out["Events"][0]["CloudTrailEvent"])["recipientAccountId"] == ACCOUNT_A


def test_no_plaintext_ciphertext_or_secret_reaches_the_trail(trail_server):
    kms = trail_server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    plaintext = b"TOP-SECRET-PLAINTEXT-0123456789"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext)["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob)
    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
    reencrypted = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key["KeyId"])["CiphertextBlob"]
    random = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    forbidden = [plaintext, base64.b64encode(plaintext), base64.b64encode(blob), base64.b64encode(reencrypted),
                 base64.b64encode(data_key["Plaintext"]), base64.b64encode(data_key["CiphertextBlob"]),
                 base64.b64encode(random)]
    forbidden += [secret.encode() for (_, _, _, secret, _) in USERS.values()]
    exported = kura_cli("audit", "export", "--data-dir", str(trail_server.data_dir), check=True).stdout.encode()
    assert b"GenerateDataKey" in exported and b"ReEncrypt" in exported
    stored = b"".join(p.read_bytes() for p in (trail_server.data_dir / "audit").iterdir())
    for needle in forbidden:
        assert needle not in exported
        assert needle not in stored


def test_role_sessions_iam_and_sts_calls_are_recorded_without_secrets(trail_server):
    iam = trail_server.client("iam")
    role_name = f"AuditRole{int(time.time() * 1000) % 10**9}"
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]
    iam.put_role_policy(RoleName=role_name, PolicyName="kms", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}))
    user_name = f"audit-user-{int(time.time() * 1000) % 10**9}"
    iam.create_user(UserName=user_name)
    access_key = iam.create_access_key(UserName=user_name)["AccessKey"]
    assumed = trail_server.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="audited-session")
    credentials = assumed["Credentials"]
    session = boto3.client("kms", endpoint_url=trail_server.endpoint, region_name=REGION,
                           aws_access_key_id=credentials["AccessKeyId"],
                           aws_secret_access_key=credentials["SecretAccessKey"],
                           aws_session_token=credentials["SessionToken"])
    listed_id = session.list_keys()["ResponseMetadata"]["RequestId"]

    [listed] = by_request_id(trail_server, listed_id)
    identity = listed["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/{role_name}/audited-session"
    assert identity["accessKeyId"] == credentials["AccessKeyId"]
    assert identity["sessionContext"]["sessionIssuer"] == {
        "type": "Role", "principalId": role["RoleId"], "arn": role["Arn"], "accountId": ACCOUNT_A,
        "userName": role_name}
    assert identity["sessionContext"]["attributes"]["mfaAuthenticated"] == "false"
    by_session = lookup_all(trail_server, LookupAttributes=[{"AttributeKey": "Username",
                                                              "AttributeValue": "audited-session"}])
    assert [e["EventName"] for e in by_session] == ["ListKeys"]

    sources = {r["eventSource"] for r in records(lookup_all(trail_server))}
    assert {"iam.amazonaws.com", "sts.amazonaws.com", "kms.amazonaws.com"} <= sources
    exported = kura_cli("audit", "export", "--data-dir", str(trail_server.data_dir), check=True).stdout
    for secret in (access_key["SecretAccessKey"], credentials["SecretAccessKey"], credentials["SessionToken"]):
        assert secret not in exported


def rechain(lines, start):
    """Recomputes the stored chain value of lines[start:] as docs/audit.md defines it:
    h(seq) = SHA-256(h(seq-1) || seq (8 bytes, big-endian) || SHA-256(record bytes))."""
    previous = bytes.fromhex(json.loads(lines[start - 1])["hash"]) if start else bytes(32)
    for index in range(start, len(lines)):
        line = lines[index].encode()
        stored = json.loads(line)
        record = line[line.index(b'"record":') + len(b'"record":'):-1]
        head = hashlib.sha256(previous + stored["seq"].to_bytes(8, "big") + hashlib.sha256(record).digest()).digest()
        lines[index] = lines[index].replace(stored["hash"], head.hex(), 1)
        previous = head


def test_verify_passes_live_and_finds_each_tampering(fresh_kura, tmp_path):
    kms = fresh_kura.client("kms")
    key = kms.create_key()["KeyMetadata"]
    for i in range(8):
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext={"i": str(i)})
    live = verify(fresh_kura.data_dir)
    assert live.returncode == 0, live.stdout + live.stderr
    assert "OK:" in live.stdout
    fresh_kura.stop()
    clean = verify(fresh_kura.data_dir)
    assert clean.returncode == 0, clean.stdout
    assert "OK: 9 records" in clean.stdout

    def tampered(name, change):
        copy = tmp_path / name
        shutil.copytree(fresh_kura.data_dir, copy)
        segment = copy / "audit" / "segment-000001.jsonl"
        lines = segment.read_text().splitlines()
        change(lines)
        segment.write_text("\n".join(lines) + "\n")
        result = verify(copy)
        assert result.returncode == 1, result.stdout
        assert "BROKEN at segment-000001.jsonl " in result.stdout, result.stdout
        return result.stdout

    def edit(lines):
        lines[4] = lines[4].replace('"i":"3"', '"i":"9"')

    out = tampered("edited", edit)
    assert "line 5 " in out and "seq 5" in out and "modified" in out

    out = tampered("deleted", lambda lines: lines.pop(5))
    assert "line 6 " in out and "seq 6 is missing" in out

    out = tampered("inserted", lambda lines: lines.insert(3, lines[7]))
    assert "line 4 " in out and "seq 8 found where seq 4 was expected" in out

    def swap(lines):
        lines[2], lines[3] = lines[3], lines[2]

    out = tampered("reordered", swap)
    assert "line 3 " in out and "reordered" in out

    # Edited, and every later chain value recomputed (what a forger without the signing
    # key can do): the chain is consistent again, the signed digest is not.
    def edit_and_rechain(lines):
        edit(lines)
        rechain(lines, 4)

    out = tampered("rechained", edit_and_rechain)
    assert "signed digest #" in out and "was changed" in out, out

    # Cutting the newest records: the shutdown digest covers them.
    out = tampered("truncated", lambda lines: lines.pop())
    assert "records were removed from the end" in out

    # A server does not start on a trail whose signed head is gone (start-up checks the
    # newest digest and the records after it; `kura audit verify` checks everything).
    damaged = tmp_path / "truncated"
    process = subprocess.run([KURA_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(damaged),
                              "--config", str(fresh_kura.config_path)], capture_output=True, text=True, timeout=60)
    assert process.returncode != 0
    assert "audit trail" in process.stderr and "damaged" in process.stderr


def test_restart_keeps_the_trail_and_the_chain_continues(fresh_kura):
    kms = fresh_kura.client("kms")
    key = kms.create_key()["KeyMetadata"]
    before = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"before")["ResponseMetadata"]["RequestId"]
    fresh_kura.restart()
    kms = fresh_kura.client("kms")
    after = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"after")["ResponseMetadata"]["RequestId"]
    assert by_request_id(fresh_kura, before) and by_request_id(fresh_kura, after)
    fresh_kura.stop()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
    # CreateKey, Encrypt, Encrypt, and the two LookupEvents calls.
    assert "OK: 5 records (seq 1-5)" in result.stdout, result.stdout
    assert len(list((fresh_kura.data_dir / "audit").glob("segment-*.jsonl"))) == 2
    exported = export(fresh_kura.data_dir, "--account", ACCOUNT_A)
    assert [r["eventName"] for r in exported] == ["CreateKey", "Encrypt", "Encrypt", "LookupEvents", "LookupEvents"]
    assert export(fresh_kura.data_dir, "--account", ACCOUNT_B) == []


@pytest.fixture(params=["mutating", "all"])
def sync_mode_kura(request, tmp_path):
    """A server of the test's own, with each --audit-sync policy."""
    server = KuraServer(tmp_path / "data", extra_args=["--audit-sync", request.param])
    yield server
    server.stop()


def test_kill_9_loses_no_acknowledged_call(sync_mode_kura):
    """Mutating calls (CreateAlias, UpdateKeyDescription) and read-only ones (Encrypt), 16 at
    a time, then kill -9: every acknowledged call is in the trail, and so is its effect."""
    fresh_kura = sync_mode_kura
    kms = fresh_kura.client("kms")
    key = kms.create_key()["KeyMetadata"]

    def call(i):
        client = fresh_kura.client("kms")
        if i % 4 == 0:
            response = client.create_alias(AliasName=f"alias/kill-{i}", TargetKeyId=key["KeyId"])
        elif i % 4 == 1:
            response = client.update_key_description(KeyId=key["KeyId"], Description=f"d{i}")
        else:
            response = client.encrypt(KeyId=key["KeyId"], Plaintext=b"k", EncryptionContext={"n": str(i)})
        return response["ResponseMetadata"]["RequestId"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        acknowledged = list(pool.map(call, range(200)))
    fresh_kura.kill9()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
    stored = {r["requestID"]: r for r in export(fresh_kura.data_dir)}
    assert set(acknowledged) <= set(stored)
    assert sum(stored[i]["eventName"] == "CreateAlias" and stored[i]["readOnly"] is False
               for i in acknowledged) == 50
    # The server starts again on the crashed trail, signs what was unsigned, and goes on.
    fresh_kura.start()
    kms = fresh_kura.client("kms")
    kms.describe_key(KeyId=key["KeyId"])
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert {a["AliasName"] for a in aliases} == {f"alias/kill-{i}" for i in range(0, 200, 4)}
    fresh_kura.stop()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
    assert "OK: 203 records" in result.stdout, result.stdout
    assert "after the newest digest" not in result.stdout


def test_no_audit_flag(tmp_path):
    server = KuraServer(tmp_path / "data", extra_args=["--no-audit"])
    try:
        assert "audit trail:      off" in server.banner
        server.client("kms").list_keys()
        with pytest.raises(ClientError) as e:
            server.client("cloudtrail").lookup_events()
        assert error_code(e) == "UnknownOperationException"
    finally:
        server.stop()
    assert not (pathlib.Path(tmp_path) / "data" / "audit").exists()


# Every KMS operation kura serves: each must leave exactly one record.
KMS_OPERATIONS = {
    "CreateKey", "DescribeKey", "ListKeys", "UpdateKeyDescription", "EnableKey", "DisableKey",
    "ScheduleKeyDeletion", "CancelKeyDeletion", "Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext", "GenerateRandom", "CreateAlias", "UpdateAlias", "DeleteAlias",
    "ListAliases", "GetKeyPolicy", "PutKeyPolicy", "ListKeyPolicies", "EnableKeyRotation",
    "DisableKeyRotation", "GetKeyRotationStatus", "RotateKeyOnDemand", "ListKeyRotations", "TagResource",
    "UntagResource", "ListResourceTags", "CreateGrant", "ListGrants", "ListRetirableGrants", "RetireGrant",
    "RevokeGrant",
}
KMS_WRITES = {"CreateKey", "UpdateKeyDescription", "EnableKey", "DisableKey", "ScheduleKeyDeletion",
              "CancelKeyDeletion", "CreateAlias", "UpdateAlias", "DeleteAlias", "PutKeyPolicy", "EnableKeyRotation",
              "DisableKeyRotation", "RotateKeyOnDemand", "TagResource", "UntagResource", "CreateGrant",
              "RetireGrant", "RevokeGrant"}


class Recorder:
    """Makes calls with a boto3 client and remembers what each one's record must say."""

    def __init__(self):
        self.expected = []

    def __call__(self, client, name, parameters=None, resources=(), **kwargs):
        response = getattr(client, xform_name(name))(**kwargs)
        self.expected.append((response["ResponseMetadata"]["RequestId"], name, parameters, list(resources)))
        return response

    def check(self, server, event_source, read_only, identity_arn, user="admin_a"):
        """Every call has one record with its name, source, readOnly, identity, resources and
        (at least) the expected requestParameters; returns the records by request id."""
        found = {}
        for record in records(lookup_all(server, user=user)):
            found.setdefault(record["requestID"], []).append(record)
        for request_id, name, parameters, resources in self.expected:
            [record] = found.get(request_id, [None])
            assert record is not None, name
            assert record["eventName"] == name
            assert record["eventSource"] == event_source(name), name
            assert record["readOnly"] is read_only(name), name
            assert record["userIdentity"]["arn"] == identity_arn, name
            assert record["eventType"] == "AwsApiCall" and record["managementEvent"] is True
            assert record["eventCategory"] == "Management" and record["awsRegion"] == REGION
            assert "errorCode" not in record and "errorMessage" not in record, name
            shown = record["requestParameters"] or {}
            assert {k: shown.get(k) for k in (parameters or {})} == (parameters or {}), (name, shown)
            assert sorted(r["ARN"] for r in record.get("resources", [])) == sorted(resources), name
        return {request_id: found[request_id][0] for request_id, *_ in self.expected}


def test_every_kms_operation_yields_its_record(trail_server):
    kms = trail_server.client("kms")
    call = Recorder()
    admin = f"arn:aws:iam::{ACCOUNT_A}:user/administrator"
    created = call(kms, "CreateKey", {"description": "every operation", "tags": [{"tagKey": "team", "tagValue": "a"}]},
                   Description="every operation", Tags=[{"TagKey": "team", "TagValue": "a"}])
    key = created["KeyMetadata"]
    call.expected[-1][3].append(key["Arn"])
    key_id, arn, on_key = key["KeyId"], key["Arn"], [key["Arn"]]
    alias = f"alias/every-{uuid.uuid4().hex[:8]}"
    context = {"Department": "Engineering"}
    call(kms, "DescribeKey", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "ListKeys", {"limit": 5}, Limit=5)
    call(kms, "UpdateKeyDescription", {"keyId": key_id, "description": "changed"}, on_key,
         KeyId=key_id, Description="changed")
    call(kms, "CreateAlias", {"aliasName": alias, "targetKeyId": key_id}, on_key, AliasName=alias, TargetKeyId=key_id)
    call(kms, "UpdateAlias", {"aliasName": alias, "targetKeyId": key_id}, on_key, AliasName=alias, TargetKeyId=key_id)
    call(kms, "ListAliases", {"keyId": key_id}, KeyId=key_id)
    blob = call(kms, "Encrypt", {"keyId": alias, "encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
                on_key, KeyId=alias, Plaintext=b"every-op-plaintext", EncryptionContext=context)["CiphertextBlob"]
    call(kms, "Decrypt", {"encryptionContext": context, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}, on_key,
         CiphertextBlob=blob, EncryptionContext=context)
    again = call(kms, "ReEncrypt", {"destinationKeyId": key_id, "sourceEncryptionContext": context,
                                    "destinationEncryptionContext": {"moved": "yes"}}, on_key,
                 CiphertextBlob=blob, SourceEncryptionContext=context, DestinationKeyId=key_id,
                 DestinationEncryptionContext={"moved": "yes"})["CiphertextBlob"]
    data_key = call(kms, "GenerateDataKey", {"keyId": key_id, "keySpec": "AES_256", "encryptionContext": context},
                    on_key, KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    call(kms, "GenerateDataKeyWithoutPlaintext", {"keyId": key_id, "numberOfBytes": 32}, on_key,
         KeyId=key_id, NumberOfBytes=32)
    random = call(kms, "GenerateRandom", {"numberOfBytes": 16}, NumberOfBytes=16)["Plaintext"]
    policy_text = call(kms, "GetKeyPolicy", {"keyId": key_id, "policyName": "default"}, on_key,
                       KeyId=key_id, PolicyName="default")["Policy"]
    call(kms, "PutKeyPolicy", {"keyId": key_id, "policyName": "default", "policy": policy_text}, on_key,
         KeyId=key_id, PolicyName="default", Policy=policy_text)
    call(kms, "ListKeyPolicies", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "EnableKeyRotation", {"keyId": key_id, "rotationPeriodInDays": 90}, on_key,
         KeyId=key_id, RotationPeriodInDays=90)
    call(kms, "GetKeyRotationStatus", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "RotateKeyOnDemand", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "ListKeyRotations", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "DisableKeyRotation", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "TagResource", {"keyId": key_id, "tags": [{"tagKey": "stage", "tagValue": "test"}]}, on_key,
         KeyId=key_id, Tags=[{"TagKey": "stage", "TagValue": "test"}])
    call(kms, "ListResourceTags", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "UntagResource", {"keyId": key_id, "tagKeys": ["stage"]}, on_key, KeyId=key_id, TagKeys=["stage"])
    nobody = f"arn:aws:iam::{ACCOUNT_A}:user/nobody"
    grant = call(kms, "CreateGrant", {"keyId": key_id, "granteePrincipal": nobody, "retiringPrincipal": admin,
                                      "operations": ["Decrypt"],
                                      "constraints": {"encryptionContextSubset": {"Department": "Engineering"}}},
                 on_key, KeyId=key_id, GranteePrincipal=nobody, RetiringPrincipal=admin, Operations=["Decrypt"],
                 Constraints={"EncryptionContextSubset": {"Department": "Engineering"}})
    call(kms, "ListGrants", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "ListRetirableGrants", {"retiringPrincipal": admin}, RetiringPrincipal=admin)
    call(kms, "RetireGrant", {"keyId": key_id, "grantId": grant["GrantId"]}, on_key,
         KeyId=key_id, GrantId=grant["GrantId"])
    second = kms.create_grant(KeyId=key_id, GranteePrincipal=nobody, Operations=["Encrypt"])
    call(kms, "RevokeGrant", {"keyId": key_id, "grantId": second["GrantId"]}, on_key,
         KeyId=key_id, GrantId=second["GrantId"])
    call(kms, "DisableKey", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "EnableKey", {"keyId": key_id}, on_key, KeyId=key_id)
    call(kms, "DeleteAlias", {"aliasName": alias}, on_key, AliasName=alias)
    scheduled = call(kms, "ScheduleKeyDeletion", {"keyId": key_id, "pendingWindowInDays": 7}, on_key,
                     KeyId=key_id, PendingWindowInDays=7)
    call(kms, "CancelKeyDeletion", {"keyId": key_id}, on_key, KeyId=key_id)
    assert {name for _, name, _, _ in call.expected} == KMS_OPERATIONS

    found = call.check(trail_server, lambda _: "kms.amazonaws.com", lambda name: name not in KMS_WRITES, admin)
    by_name = {record["eventName"]: record for record in found.values()}
    # What the service answered, where CloudTrail shows it; nothing for cryptographic calls.
    assert by_name["CreateKey"]["responseElements"]["keyMetadata"]["keyId"] == key_id
    assert by_name["CreateKey"]["responseElements"]["keyMetadata"]["arn"] == arn
    assert by_name["CreateGrant"]["responseElements"] == {"grantId": grant["GrantId"]}
    assert by_name["ScheduleKeyDeletion"]["responseElements"]["keyState"] == "PendingDeletion"
    assert by_name["ScheduleKeyDeletion"]["responseElements"]["keyId"] == scheduled["KeyId"]
    for name in ("Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
                 "GenerateRandom", "GetKeyPolicy"):
        assert by_name[name]["responseElements"] is None, name
    text = json.dumps(list(found.values()))
    for secret in (b"every-op-plaintext", blob, again, data_key["Plaintext"], data_key["CiphertextBlob"], random):
        assert base64.b64encode(secret).decode() not in text
    assert "every-op-plaintext" not in text


IAM_ACTIONS = {
    "CreateUser", "GetUser", "ListUsers", "DeleteUser", "CreateAccessKey", "ListAccessKeys", "DeleteAccessKey",
    "UpdateAccessKey", "CreateRole", "GetRole", "ListRoles", "DeleteRole", "UpdateAssumeRolePolicy", "CreatePolicy",
    "GetPolicy", "GetPolicyVersion", "ListPolicies", "DeletePolicy", "AttachUserPolicy", "DetachUserPolicy",
    "AttachRolePolicy", "DetachRolePolicy", "ListAttachedUserPolicies", "ListAttachedRolePolicies", "PutUserPolicy",
    "GetUserPolicy", "DeleteUserPolicy", "ListUserPolicies", "PutRolePolicy", "GetRolePolicy", "DeleteRolePolicy",
    "ListRolePolicies",
}


def test_every_iam_and_sts_operation_yields_its_record(trail_server):
    iam, sts = trail_server.client("iam"), trail_server.client("sts")
    call = Recorder()
    suffix = uuid.uuid4().hex[:8]
    user, role, managed = f"every-{suffix}", f"Every{suffix}", f"EveryPolicy{suffix}"
    user_arn = f"arn:aws:iam::{ACCOUNT_A}:user/{user}"
    role_arn = f"arn:aws:iam::{ACCOUNT_A}:role/{role}"
    policy_arn = f"arn:aws:iam::{ACCOUNT_A}:policy/{managed}"
    document = json.dumps({"Version": "2012-10-17",
                           "Statement": [{"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]})
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "sts:AssumeRole"}]})
    call(iam, "CreateUser", {"userName": user}, [user_arn], UserName=user)
    call(iam, "GetUser", {"userName": user}, [user_arn], UserName=user)
    call(iam, "ListUsers", {"maxItems": 5}, MaxItems=5)
    access_key = call(iam, "CreateAccessKey", {"userName": user}, [user_arn], UserName=user)["AccessKey"]
    call(iam, "ListAccessKeys", {"userName": user}, UserName=user)
    key_params = {"userName": user, "accessKeyId": access_key["AccessKeyId"]}
    call(iam, "UpdateAccessKey", {**key_params, "status": "Inactive"}, [user_arn], UserName=user,
         AccessKeyId=access_key["AccessKeyId"], Status="Inactive")
    call(iam, "DeleteAccessKey", key_params, [user_arn], UserName=user, AccessKeyId=access_key["AccessKeyId"])
    call(iam, "CreateRole", {"roleName": role, "assumeRolePolicyDocument": trust}, [role_arn],
         RoleName=role, AssumeRolePolicyDocument=trust)
    call(iam, "GetRole", {"roleName": role}, [role_arn], RoleName=role)
    call(iam, "ListRoles", {"maxItems": 5}, MaxItems=5)
    call(iam, "UpdateAssumeRolePolicy", {"roleName": role, "policyDocument": trust}, [role_arn],
         RoleName=role, PolicyDocument=trust)
    call(iam, "CreatePolicy", {"policyName": managed, "policyDocument": document}, [policy_arn],
         PolicyName=managed, PolicyDocument=document)
    call(iam, "GetPolicy", {"policyArn": policy_arn}, [policy_arn], PolicyArn=policy_arn)
    call(iam, "GetPolicyVersion", {"policyArn": policy_arn, "versionId": "v1"}, [policy_arn],
         PolicyArn=policy_arn, VersionId="v1")
    call(iam, "ListPolicies", {"scope": "Local"}, Scope="Local")
    for holder, arn, key in (("User", user_arn, {"UserName": user}), ("Role", role_arn, {"RoleName": role})):
        lower = {k[0].lower() + k[1:]: v for k, v in key.items()}
        call(iam, f"Attach{holder}Policy", {**lower, "policyArn": policy_arn}, [arn, policy_arn],
             PolicyArn=policy_arn, **key)
        call(iam, f"ListAttached{holder}Policies", lower, **key)
        call(iam, f"Detach{holder}Policy", {**lower, "policyArn": policy_arn}, [arn, policy_arn],
             PolicyArn=policy_arn, **key)
        call(iam, f"Put{holder}Policy", {**lower, "policyName": "inline", "policyDocument": document}, [arn],
             PolicyName="inline", PolicyDocument=document, **key)
        call(iam, f"Get{holder}Policy", {**lower, "policyName": "inline"}, [arn], PolicyName="inline", **key)
        call(iam, f"List{holder}Policies", lower, **key)
        call(iam, f"Delete{holder}Policy", {**lower, "policyName": "inline"}, [arn], PolicyName="inline", **key)
    call(sts, "GetCallerIdentity")
    assumed = call(sts, "AssumeRole", {"roleArn": role_arn, "roleSessionName": "every-op", "durationSeconds": 900},
                   [role_arn], RoleArn=role_arn, RoleSessionName="every-op", DurationSeconds=900)
    call(iam, "DeletePolicy", {"policyArn": policy_arn}, [policy_arn], PolicyArn=policy_arn)
    call(iam, "DeleteRole", {"roleName": role}, [role_arn], RoleName=role)
    call(iam, "DeleteUser", {"userName": user}, [user_arn], UserName=user)
    assert {name for _, name, _, _ in call.expected} == IAM_ACTIONS | {"GetCallerIdentity", "AssumeRole"}

    found = call.check(trail_server,
                       lambda name: "sts.amazonaws.com" if name in ("GetCallerIdentity", "AssumeRole")
                       else "iam.amazonaws.com",
                       lambda name: name.startswith(("Get", "List")) or name == "AssumeRole",
                       f"arn:aws:iam::{ACCOUNT_A}:user/administrator")
    by_name = {record["eventName"]: record for record in found.values()}
    assert by_name["CreateUser"]["responseElements"]["user"]["userName"] == user
    assert by_name["CreateAccessKey"]["responseElements"]["accessKey"]["accessKeyId"] == access_key["AccessKeyId"]
    assert by_name["GetCallerIdentity"]["requestParameters"] is None
    credentials = assumed["Credentials"]
    assert by_name["AssumeRole"]["responseElements"]["credentials"]["accessKeyId"] == credentials["AccessKeyId"]
    assert by_name["AssumeRole"]["responseElements"]["assumedRoleUser"]["arn"] == assumed["AssumedRoleUser"]["Arn"]
    text = json.dumps(list(found.values()))
    for secret in (access_key["SecretAccessKey"], credentials["SecretAccessKey"], credentials["SessionToken"]):
        assert secret not in text


def test_refused_and_failed_calls_are_recorded_with_their_error(trail_server):
    """Refused (access) and failed (not found, invalid, wrong key state) calls of each
    service are recorded with the code and message the caller received."""
    kms = trail_server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    role = f"Refusing{uuid.uuid4().hex[:8]}"
    role_arn = trail_server.client("iam").create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}}]}))["Role"]["Arn"]
    missing = f"arn:aws:kms:{REGION}:{ACCOUNT_A}:key/{uuid.uuid4()}"
    nobody = f"arn:aws:iam::{ACCOUNT_A}:user/nobody"
    cases = [
        (lambda: trail_server.client("iam", user="nobody_a").create_user(UserName="refused"), "iam.amazonaws.com",
         "CreateUser", "AccessDenied",
         f"User: {nobody} is not authorized to perform: iam:CreateUser on resource: "
         f"arn:aws:iam::{ACCOUNT_A}:user/refused because no identity-based policy allows the iam:CreateUser action"),
        (lambda: trail_server.client("sts", user="nobody_a").assume_role(RoleArn=role_arn, RoleSessionName="no"),
         "sts.amazonaws.com", "AssumeRole", "AccessDenied",
         f"User: {nobody} is not authorized to perform: sts:AssumeRole on resource: {role_arn} "
         "because no identity-based policy allows the sts:AssumeRole action"),
        (lambda: trail_server.client("kms", user="nobody_a").create_key(), "kms.amazonaws.com", "CreateKey",
         "AccessDeniedException",
         f"User: {nobody} is not authorized to perform: kms:CreateKey "
         "because no identity-based policy allows the kms:CreateKey action"),
        (lambda: kms.describe_key(KeyId=missing), "kms.amazonaws.com", "DescribeKey", "NotFoundException",
         f"Key '{missing}' does not exist"),
        (lambda: kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x"), "kms.amazonaws.com", "Encrypt",
         "DisabledException", f"{key['Arn']} is disabled."),
        (lambda: kms.generate_random(NumberOfBytes=0), "kms.amazonaws.com", "GenerateRandom",
         "ValidationException", None),
        (lambda: trail_server.client("iam").get_user(UserName="no-such-user"), "iam.amazonaws.com", "GetUser",
         "NoSuchEntity", "The user with name no-such-user cannot be found."),
    ]
    for call, source, name, code, message in cases:
        with pytest.raises(ClientError) as e:
            call()
        error = e.value.response["Error"]
        assert error["Code"] == code, (name, error)
        if message:
            assert error["Message"] == message, (name, error)
        [record] = by_request_id(trail_server, e.value.response["ResponseMetadata"]["RequestId"])
        assert (record["eventSource"], record["eventName"]) == (source, name)
        assert (record["errorCode"], record["errorMessage"]) == (code, error["Message"])
        assert record["recipientAccountId"] == ACCOUNT_A
        assert record["requestID"] == e.value.response["ResponseMetadata"]["RequestId"]


def test_cross_account_assume_role_is_recorded_in_both_accounts(trail_server):
    role = f"FromB{uuid.uuid4().hex[:8]}"
    role_arn = trail_server.client("iam").create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}}]}))["Role"]["Arn"]
    assumed = trail_server.client("sts", user="admin_b").assume_role(RoleArn=role_arn, RoleSessionName="from-b")
    request_id = assumed["ResponseMetadata"]["RequestId"]
    [in_b] = by_request_id(trail_server, request_id, user="admin_b")
    [in_a] = by_request_id(trail_server, request_id, user="admin_a")
    assert in_b["userIdentity"]["arn"] == f"arn:aws:iam::{ACCOUNT_B}:user/administrator"
    assert in_a["userIdentity"]["type"] == "AWSAccount" and in_a["userIdentity"]["accountId"] == ACCOUNT_B
    assert in_a["sharedEventID"] == in_b["sharedEventID"] and in_a["eventID"] != in_b["eventID"]
    for record in (in_a, in_b):
        assert record["resources"] == [{"accountId": ACCOUNT_A, "type": "AWS::IAM::Role", "ARN": role_arn}]
        assert assumed["Credentials"]["SecretAccessKey"] not in json.dumps(record)


def test_lookup_time_window_each_attribute_with_the_cli_paging_and_isolation(trail_server):
    kms = trail_server.client("kms")
    created = kms.create_key(Description="time window")
    key = created["KeyMetadata"]
    # Event times have whole seconds: the next call falls in a later second than CreateKey.
    middle = math.floor(time.time()) + 1
    time.sleep(max(0.0, middle - time.time()) + 0.05)
    described = kms.describe_key(KeyId=key["KeyId"])
    by_key = [{"AttributeKey": "ResourceName", "AttributeValue": key["KeyId"]}]
    client = trail_server.client("cloudtrail")
    later = client.lookup_events(LookupAttributes=by_key, StartTime=middle)["Events"]
    earlier = client.lookup_events(LookupAttributes=by_key, EndTime=middle - 1)["Events"]
    assert [e["EventName"] for e in later] == ["DescribeKey"]
    assert [e["EventName"] for e in earlier] == ["CreateKey"]
    both = client.lookup_events(LookupAttributes=by_key, StartTime=middle - 1, EndTime=middle)["Events"]
    assert [e["EventName"] for e in both] == ["DescribeKey", "CreateKey"]
    [describe] = [json.loads(e["CloudTrailEvent"]) for e in later]
    assert describe["requestID"] == described["ResponseMetadata"]["RequestId"]

    # The aws CLI with each lookup attribute, and with a time window.
    def cli_lookup(*args, user="admin_a"):
        return json.loads(trail_server.aws("cloudtrail", "lookup-events", *args, user=user).stdout)

    for attribute, value in (("EventId", describe["eventID"]), ("EventName", "DescribeKey"),
                             ("ReadOnly", "true"), ("Username", "administrator"),
                             ("ResourceType", "AWS::KMS::Key"), ("ResourceName", key["Arn"]),
                             ("EventSource", "kms.amazonaws.com"), ("AccessKeyId", USERS["admin_a"][2])):
        out = cli_lookup("--lookup-attributes", f"AttributeKey={attribute},AttributeValue={value}",
                         "--start-time", str(middle), "--max-items", "50")
        assert describe["eventID"] in [e["EventId"] for e in out["Events"]], attribute
        for event in out["Events"]:
            record = json.loads(event["CloudTrailEvent"])
            assert record["recipientAccountId"] == ACCOUNT_A
            assert record["eventTime"] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle))
    window = cli_lookup("--lookup-attributes", f"AttributeKey=ResourceName,AttributeValue={key['KeyId']}",
                        "--start-time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle - 1)),
                        "--end-time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle - 1)))
    assert [e["EventName"] for e in window["Events"]] == ["CreateKey"]
    # The CLI's own paging: one event a page, continued with --starting-token.
    first = cli_lookup("--lookup-attributes", f"AttributeKey=ResourceName,AttributeValue={key['KeyId']}",
                       "--max-items", "1", "--page-size", "1")
    assert [e["EventName"] for e in first["Events"]] == ["DescribeKey"] and first["NextToken"]
    rest = cli_lookup("--lookup-attributes", f"AttributeKey=ResourceName,AttributeValue={key['KeyId']}",
                      "--max-items", "1", "--page-size", "1", "--starting-token", first["NextToken"])
    assert [e["EventName"] for e in rest["Events"]] == ["CreateKey"] and "NextToken" not in rest

    # Another account finds none of it, by any attribute.
    for attribute, value in (("EventId", describe["eventID"]), ("ResourceName", key["Arn"])):
        out = cli_lookup("--lookup-attributes", f"AttributeKey={attribute},AttributeValue={value}", user="admin_b")
        assert out["Events"] == [], attribute


def test_export_writes_the_records_lookup_events_returns(trail_server):
    kms = trail_server.client("kms")
    key = kms.create_key(Description="exported")["KeyMetadata"]
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"exported", EncryptionContext={"e": "1"})
    looked_up = records(lookup_all(trail_server, LookupAttributes=[{"AttributeKey": "ResourceName",
                                                                     "AttributeValue": key["Arn"]}]))
    exported = export(trail_server.data_dir, "--account", ACCOUNT_A)
    assert all(set(r) >= {"eventVersion", "eventID", "recipientAccountId"} for r in exported)
    assert not any("seq" in r or "hash" in r for r in exported)
    assert {r["recipientAccountId"] for r in exported} == {ACCOUNT_A}
    # The same records (byte for byte, as JSON), oldest first.
    by_id = {r["eventID"]: r for r in exported}
    assert [by_id[r["eventID"]] for r in reversed(looked_up)] == list(reversed(looked_up))
    positions = [list(by_id).index(r["eventID"]) for r in reversed(looked_up)]
    assert positions == sorted(positions)
    everyone = export(trail_server.data_dir)
    assert {r["recipientAccountId"] for r in everyone} == {ACCOUNT_A, ACCOUNT_B}
    assert len(everyone) >= len(exported) + len(export(trail_server.data_dir, "--account", ACCOUNT_B))


def test_a_service_acting_through_a_grant_is_recorded(tmp_path):
    """The database service uses a customer managed key on the user's behalf: the user's
    DescribeKey and CreateGrant go through the service (invokedBy), then the service's own
    role uses the key under the grant; every call is in the user's account's trail."""
    server = KuraServer(tmp_path / "data", config=config_text("[rds]\nfirst_port = 27432\n"))
    try:
        kms, rds = server.client("kms"), server.client("rds")
        key = kms.create_key(Description="for a database")["KeyMetadata"]
        password = "Passw0rd-audited"
        created = rds.create_db_cluster(DBClusterIdentifier="audited", Engine="aurora-postgresql",
                                        MasterUsername="admin_user", MasterUserPassword=password,
                                        StorageEncrypted=True, KmsKeyId=key["KeyId"])
        cluster = created["DBCluster"]
        request_id = created["ResponseMetadata"]["RequestId"]
        deadline = time.monotonic() + 120
        while rds.describe_db_clusters(DBClusterIdentifier="audited")["DBClusters"][0]["Status"] != "available":
            assert time.monotonic() < deadline, "the cluster never became available"
            time.sleep(0.5)
        rds.delete_db_cluster(DBClusterIdentifier="audited", SkipFinalSnapshot=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                rds.describe_db_clusters(DBClusterIdentifier="audited")
            except ClientError:
                break
            assert time.monotonic() < deadline, "the cluster was never deleted"
            time.sleep(0.5)

        on_key = records(lookup_all(server, LookupAttributes=[{"AttributeKey": "ResourceName",
                                                                "AttributeValue": key["Arn"]}]))[::-1]
        names = [r["eventName"] for r in on_key]
        assert names[:4] == ["CreateKey", "DescribeKey", "CreateGrant", "GenerateDataKey"], names
        assert names[-1] == "RetireGrant", names
        _, describe, grant, generate = on_key[:4]
        retire = on_key[-1]
        admin = f"arn:aws:iam::{ACCOUNT_A}:user/administrator"
        service_role = f"arn:aws:iam::{ACCOUNT_A}:role/aws-service-role/rds.amazonaws.com/AWSServiceRoleForRDS"
        context = {"aws:rds:db-id": cluster["DbClusterResourceId"]}
        # The user's own calls, made by the service on the user's behalf.
        for record in (describe, grant):
            assert record["requestID"] == request_id
            assert record["userIdentity"]["arn"] == admin
            assert record["userIdentity"]["invokedBy"] == "rds.amazonaws.com"
            assert record["sourceIPAddress"] == "rds.amazonaws.com" == record["userAgent"]
        assert grant["readOnly"] is False
        assert grant["requestParameters"]["granteePrincipal"] == service_role
        assert grant["requestParameters"]["constraints"] == {"encryptionContextSubset": context}
        grant_id = grant["responseElements"]["grantId"]
        # The service's role, using the key under that grant.
        for record in (generate, retire):
            identity = record["userIdentity"]
            assert identity["type"] == "AssumedRole" and identity["invokedBy"] == "rds.amazonaws.com"
            assert identity["sessionContext"]["sessionIssuer"]["arn"] == service_role
            assert record["recipientAccountId"] == ACCOUNT_A and "errorCode" not in record
        assert generate["requestParameters"]["encryptionContext"] == context
        assert generate["requestParameters"]["keySpec"] == "AES_256"
        assert generate["responseElements"] is None
        assert retire["requestParameters"]["grantId"] == grant_id
        # The database call itself, without its password.
        [create] = [r for r in by_request_id(server, request_id) if r["eventSource"] == "rds.amazonaws.com"]
        assert create["eventName"] == "CreateDBCluster" and create["readOnly"] is False
        assert password not in json.dumps(create)
    finally:
        server.stop()


def test_kms_service_events_are_recorded(fresh_kura, time_shift_library):
    """Work KMS does on its own — deleting a key at the end of its waiting period, rotating
    a key on schedule — is recorded as CloudTrail's AwsServiceEvent (clock moved 91 days)."""
    kms = fresh_kura.client("kms")
    doomed = kms.create_key(Description="doomed")["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    rotating = kms.create_key(Description="rotating")["KeyMetadata"]
    kms.enable_key_rotation(KeyId=rotating["KeyId"], RotationPeriodInDays=90)
    shift = 91 * 86400
    restart_shifted(fresh_kura, time_shift_library, shift)
    deadline = time.monotonic() + 30
    while True:
        out = json.loads(fresh_kura.aws("cloudtrail", "lookup-events", "--lookup-attributes",
                                        "AttributeKey=EventSource,AttributeValue=kms.amazonaws.com",
                                        "--max-items", "10", env=shifted_env(time_shift_library, shift)).stdout)
        events = {e["EventName"]: json.loads(e["CloudTrailEvent"]) for e in out["Events"]}
        if {"DeleteKey", "RotateKey"} <= set(events):
            break
        assert time.monotonic() < deadline, sorted(events)
        time.sleep(0.5)
    for name, key in (("DeleteKey", doomed), ("RotateKey", rotating)):
        record = events[name]
        assert record["eventType"] == "AwsServiceEvent" and record["readOnly"] is False
        assert record["userIdentity"] == {"accountId": ACCOUNT_A, "invokedBy": "AWS Internal"}
        assert record["sourceIPAddress"] == "AWS Internal" == record["userAgent"]
        assert record["requestParameters"] is None
        assert record["serviceEventDetails"] == {"keyId": key["KeyId"]}
        assert record["resources"] == [{"accountId": ACCOUNT_A, "type": "AWS::KMS::Key", "ARN": key["Arn"]}]
        assert record["recipientAccountId"] == ACCOUNT_A
    fresh_kura.stop()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
