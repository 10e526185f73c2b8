"""What arrives on the wire that no SDK would send: bad JSON, wrong types, oversize bodies,
unknown targets, and every way a signature can be wrong. Requests are signed with
botocore's own SigV4 signer, then sent raw."""

import datetime
import json
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from kura_harness import REGION, USERS


def signed(kura, target, body, user="admin_a", headers=None, service="kms", region=REGION, when=None,
           access_key=None, secret=None):
    _, _, key_id, key_secret, _ = USERS[user]
    credentials = botocore.credentials.Credentials(access_key or key_id, secret or key_secret)
    request = botocore.awsrequest.AWSRequest(method="POST", url=kura.endpoint + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        **({"X-Amz-Target": target} if target else {}),
        **(headers or {}),
    })
    signer = botocore.auth.SigV4Auth(credentials, service, region)
    if when is not None:
        # botocore stamps the current time; move it to test the clock-skew window.
        original = datetime.datetime
        class Frozen(original):
            @classmethod
            def utcnow(cls):
                return when
            @classmethod
            def now(cls, tz=None):
                return when.replace(tzinfo=tz) if tz else when
        botocore.auth.datetime.datetime = Frozen
        try:
            signer.add_auth(request)
        finally:
            botocore.auth.datetime.datetime = original
    else:
        signer.add_auth(request)
    return request


def send(request):
    prepared = request.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    raw = urllib.request.Request(prepared.url, data=body, method=prepared.method,
                                 headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, {"raw": body.decode(errors="replace")}


def call(kura, target, body, **kwargs):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return send(signed(kura, target, body, **kwargs))


def test_valid_raw_request_works(kura):
    status, body = call(kura, "TrentService.ListKeys", {})
    assert status == 200 and "Keys" in body


def test_malformed_json(kura):
    status, body = call(kura, "TrentService.CreateKey", "{not json")
    assert (status, body["__type"]) == (400, "SerializationException")


@pytest.mark.parametrize("payload", [
    {"KeyId": 5},
    {"KeyId": ["a"]},
    {"KeyId": "x", "Plaintext": 17},
    {"KeyId": "x", "Plaintext": "%%%not-base64%%%"},
    {"KeyId": "x", "Plaintext": "aGk=", "EncryptionContext": ["not", "a", "map"]},
    {"KeyId": "x", "Plaintext": "aGk=", "EncryptionContext": {"k": 1}},
    [],
    "a string",
    None,
])
def test_wrong_types_are_serialization_errors(kura, payload):
    status, body = call(kura, "TrentService.Encrypt", json.dumps(payload))
    assert (status, body["__type"]) == (400, "SerializationException"), body


def test_missing_required_members(kura):
    status, body = call(kura, "TrentService.Encrypt", {})
    assert status == 400 and body["__type"] == "ValidationException"
    assert "Value null at 'keyId' failed to satisfy constraint: Member must not be null" in body["message"]
    assert "'plaintext'" in body["message"]


def test_oversize_body(kura):
    status, body = call(kura, "TrentService.Encrypt", json.dumps({"KeyId": "x", "Plaintext": "A" * (2 * 1024 * 1024)}))
    assert status == 413
    assert body["__type"] == "RequestEntityTooLarge"


def test_unknown_and_unsupported_targets(kura):
    status, body = call(kura, "TrentService.Frobnicate", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body = call(kura, "NoSuchService_2020.Get", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body = call(kura, "TrentService.Sign", {})
    assert (status, body["__type"]) == (400, "UnsupportedOperationException")


def test_unsigned_request(kura):
    raw = urllib.request.Request(kura.endpoint + "/", data=b"{}", method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    try:
        urllib.request.urlopen(raw, timeout=10)
        raise AssertionError("an unsigned request was served")
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        assert body["__type"] == "MissingAuthenticationTokenException"


def test_incomplete_signature(kura):
    request = signed(kura, "TrentService.ListKeys", "{}")
    request.headers.replace_header("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAAAAAAAAAAAAAAAAA/20260101/ap-northeast-1/kms/aws4_request")
    status, body = send(request)
    assert (status, body["__type"]) == (400, "IncompleteSignatureException")
    assert "requires 'Signature' parameter" in body["message"]


def test_unknown_access_key(kura):
    status, body = call(kura, "TrentService.ListKeys", {}, access_key="AKIAUNKNOWNUNKNOWN00")
    assert (status, body["__type"]) == (400, "UnrecognizedClientException")
    assert body["message"] == "The security token included in the request is invalid."


def test_wrong_secret(kura):
    status, body = call(kura, "TrentService.ListKeys", {}, secret="not-the-secret")
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert body["message"].startswith("The request signature we calculated does not match")


def test_body_changed_after_signing(kura):
    request = signed(kura, "TrentService.CreateKey", json.dumps({"Description": "signed"}))
    request.data = json.dumps({"Description": "swapped"})
    status, body = send(request)
    assert (status, body["__type"]) == (400, "InvalidSignatureException")


def test_target_changed_after_signing(kura):
    request = signed(kura, "TrentService.ListKeys", "{}")
    request.headers.replace_header("X-Amz-Target", "TrentService.ListAliases")
    status, body = send(request)
    assert (status, body["__type"]) == (400, "InvalidSignatureException")


def test_wrong_region_and_service_scope(kura):
    status, body = call(kura, "TrentService.ListKeys", {}, region="eu-west-1")
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert "Credential should be scoped to a valid region" in body["message"]
    status, body = call(kura, "TrentService.ListKeys", {}, service="s3")
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert "Credential should be scoped to correct service: 'kms'" in body["message"]


def test_clock_skew(kura):
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    status, body = call(kura, "TrentService.ListKeys", {}, when=now - datetime.timedelta(minutes=4))
    assert status == 200
    status, body = call(kura, "TrentService.ListKeys", {}, when=now - datetime.timedelta(minutes=6))
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert body["message"].startswith("Signature expired: ")
    status, body = call(kura, "TrentService.ListKeys", {}, when=now + datetime.timedelta(minutes=6))
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert body["message"].startswith("Signature not yet current: ")


def test_presigned_query_authentication(kura):
    """The presigned (query-string) form of SigV4 is accepted too."""
    _, _, key_id, secret, _ = USERS["admin_a"]
    credentials = botocore.credentials.Credentials(key_id, secret)
    request = botocore.awsrequest.AWSRequest(method="POST", url=kura.endpoint + "/", data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    botocore.auth.SigV4QueryAuth(credentials, "kms", REGION, expires=60).add_auth(request)
    status, body = send(request)
    assert status == 200 and "Keys" in body


def test_request_ids_and_health(kura):
    request = signed(kura, "TrentService.ListKeys", "{}")
    prepared = request.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    raw = urllib.request.Request(prepared.url, data=body, method="POST", headers=dict(prepared.headers))
    with urllib.request.urlopen(raw, timeout=10) as response:
        assert len(response.headers["x-amzn-RequestId"]) == 36
    with urllib.request.urlopen(kura.endpoint + "/_kura/health", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    with urllib.request.urlopen(kura.endpoint + "/metrics", timeout=10) as response:
        text = response.read().decode()
        assert 'kura_api_requests_total{service="kms",operation="ListKeys",outcome="ok"}' in text
