"""The audit trail: every call recorded in CloudTrail's format, searchable with
`aws cloudtrail lookup-events`, tamper-evident (`kura audit verify`), durable across restarts
and kill -9, and free of plaintext, ciphertext and secrets."""

import base64
import concurrent.futures
import json
import pathlib
import shutil
import subprocess
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, ACCOUNT_B, KURA_BIN, REGION, USERS, KuraServer


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
    fresh_kura = sync_mode_kura
    kms = fresh_kura.client("kms")
    key = kms.create_key()["KeyMetadata"]

    def call(i):
        client = fresh_kura.client("kms")
        return client.encrypt(KeyId=key["KeyId"], Plaintext=b"k",
                              EncryptionContext={"n": str(i)})["ResponseMetadata"]["RequestId"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        acknowledged = list(pool.map(call, range(200)))
    fresh_kura.kill9()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
    stored = {r["requestID"] for r in export(fresh_kura.data_dir)}
    assert set(acknowledged) <= stored
    # The server starts again on the crashed trail, signs what was unsigned, and goes on.
    fresh_kura.start()
    fresh_kura.client("kms").describe_key(KeyId=key["KeyId"])
    fresh_kura.stop()
    result = verify(fresh_kura.data_dir)
    assert result.returncode == 0, result.stdout
    assert "OK: 202 records" in result.stdout, result.stdout
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
