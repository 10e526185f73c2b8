"""Key lifecycle, aliases, policies, tags and AWS managed keys, through boto3."""

import json

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, REGION


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def test_create_key_defaults_match_aws(new_key):
    meta = new_key(Description="lifecycle")
    assert meta["AWSAccountId"] == ACCOUNT_A
    assert meta["Arn"] == f"arn:aws:kms:{REGION}:{ACCOUNT_A}:key/{meta['KeyId']}"
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["MultiRegion"] is False
    assert meta["Description"] == "lifecycle"
    assert len(meta["CurrentKeyMaterialId"]) == 64


def test_describe_key_by_every_reference(kms, new_key):
    meta = new_key()
    kms.create_alias(AliasName="alias/describe-me", TargetKeyId=meta["KeyId"])
    for ref in (meta["KeyId"], meta["Arn"], "alias/describe-me",
                f"arn:aws:kms:{REGION}:{ACCOUNT_A}:alias/describe-me"):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == meta["KeyId"]


def test_unknown_keys_are_not_found(kms):
    missing = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=missing)
    assert error_of(e) == ("NotFoundException", f"Key 'arn:aws:kms:{REGION}:{ACCOUNT_A}:key/{missing}' does not exist")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="not-a-key")
    assert error_of(e) == ("NotFoundException", "Invalid keyId 'not-a-key'")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/nope")
    assert error_of(e) == ("NotFoundException", f"Alias arn:aws:kms:{REGION}:{ACCOUNT_A}:alias/nope is not found.")


def test_list_keys_paginates(kura):
    client = kura.client("kms", user="admin_b")
    created = {client.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen = []
    marker = None
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = client.list_keys(**kwargs)
        assert len(page["Keys"]) <= 2
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    # The paginator of boto3 walks the same pages.
    paged = [k["KeyId"] for p in client.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3})
             for k in p["Keys"]]
    assert paged == seen
    with pytest.raises(ClientError) as e:
        client.list_keys(Marker="%%%")
    assert error_of(e)[0] == "InvalidMarkerException"


def test_update_description(kms, new_key):
    meta = new_key(Description="before")
    kms.update_key_description(KeyId=meta["KeyId"], Description="after")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "after"


def test_enable_disable(kms, new_key):
    key_id = new_key()["KeyId"]
    kms.disable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    kms.enable_key(KeyId=key_id)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Enabled", True)


def test_schedule_and_cancel_deletion(kms, new_key):
    meta = new_key()
    with pytest.raises(ClientError) as e:
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=6)
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=31)
    assert error_of(e)[0] == "ValidationException"

    scheduled = kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyId"] == meta["Arn"]
    assert scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7
    days = (scheduled["DeletionDate"] - meta["CreationDate"]).total_seconds() / 86400
    assert 6.99 < days < 7.01
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["PendingDeletionWindowInDays"] == 7
    assert "DeletionDate" in described

    with pytest.raises(ClientError) as e:
        kms.schedule_key_deletion(KeyId=meta["KeyId"])
    assert error_of(e) == ("KMSInvalidStateException", f"{meta['Arn']} is pending deletion.")
    with pytest.raises(ClientError) as e:
        kms.enable_key(KeyId=meta["KeyId"])
    assert error_of(e)[0] == "KMSInvalidStateException"

    assert kms.cancel_key_deletion(KeyId=meta["KeyId"])["KeyId"] == meta["Arn"]
    # AWS leaves the key disabled after a cancelled deletion.
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as e:
        kms.cancel_key_deletion(KeyId=meta["KeyId"])
    assert error_of(e) == ("KMSInvalidStateException", f"{meta['Arn']} is not pending deletion.")


def test_aliases(kms, new_key):
    first, second = new_key(), new_key()
    kms.create_alias(AliasName="alias/app", TargetKeyId=first["KeyId"])
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/app", TargetKeyId=second["KeyId"])
    assert error_of(e) == ("AlreadyExistsException",
                           f"An alias with the name arn:aws:kms:{REGION}:{ACCOUNT_A}:alias/app already exists")
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=first["KeyId"])
    assert error_of(e)[0] == "InvalidAliasNameException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="app", TargetKeyId=first["KeyId"])
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName="alias/bad name", TargetKeyId=first["KeyId"])
    assert error_of(e)[0] == "ValidationException"

    listed = {a["AliasName"]: a for a in kms.list_aliases(KeyId=first["KeyId"])["Aliases"]}
    assert listed["alias/app"]["TargetKeyId"] == first["KeyId"]
    assert listed["alias/app"]["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT_A}:alias/app"

    kms.update_alias(AliasName="alias/app", TargetKeyId=second["KeyId"])
    assert kms.describe_key(KeyId="alias/app")["KeyMetadata"]["KeyId"] == second["KeyId"]
    assert all(a["AliasName"] != "alias/app" for a in kms.list_aliases(KeyId=first["KeyId"])["Aliases"])

    kms.delete_alias(AliasName="alias/app")
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/app")
    assert error_of(e)[0] == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.delete_alias(AliasName="alias/app")
    assert error_of(e)[0] == "NotFoundException"


def test_alias_pagination(kura):
    client = kura.client("kms", user="admin_b")
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/page-{i}" for i in range(5)]
    for name in names:
        client.create_alias(AliasName=name, TargetKeyId=key_id)
    seen = [a["AliasName"] for p in client.get_paginator("list_aliases").paginate(
        KeyId=key_id, PaginationConfig={"PageSize": 2}) for a in p["Aliases"]]
    assert seen == names


def test_default_key_policy(kms, new_key):
    meta = new_key()
    assert kms.list_key_policies(KeyId=meta["KeyId"])["PolicyNames"] == ["default"]
    policy = json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"])
    assert policy["Id"] == "key-default-1"
    [statement] = policy["Statement"]
    assert statement == {
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }


def test_put_key_policy_validates(kms, new_key):
    meta = new_key()
    good = {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
                       "Action": "kms:*", "Resource": "*"},
                      {"Sid": "Reader", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/reader"},
                       "Action": "kms:Encrypt", "Resource": "*"}],
    }
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=json.dumps(good))
    assert json.loads(kms.get_key_policy(KeyId=meta["KeyId"])["Policy"]) == good

    for bad in ("not json", json.dumps({"Statement": []}), json.dumps({"Version": "2012-10-17",
                "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*", "Resource": "*"}]})):
        with pytest.raises(ClientError) as e:
            kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=bad)
        assert error_of(e)[0] == "MalformedPolicyDocumentException"

    unknown_principal = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/ghost"}, "Action": "kms:*", "Resource": "*"}]})
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=unknown_principal)
    code, message = error_of(e)
    assert code == "MalformedPolicyDocumentException"
    assert message.startswith("Policy contains a statement with one or more invalid principals.")


def test_lockout_safety_check(kms, new_key):
    meta = new_key()
    lockout = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/reader"},
         "Action": "kms:Encrypt", "Resource": "*"}]})
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=lockout)
    assert error_of(e) == ("MalformedPolicyDocumentException",
                           "The new key policy will not allow you to update the key policy in the future.")
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=lockout,
                       BypassPolicyLockoutSafetyCheck=True)
    # Now locked out, as the check warned.
    with pytest.raises(ClientError) as e:
        kms.get_key_policy(KeyId=meta["KeyId"])
    assert error_of(e)[0] == "AccessDeniedException"


def test_tags(kms, new_key):
    meta = new_key(Tags=[{"TagKey": "team", "TagValue": "db"}])
    kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "env", "TagValue": "prod"}])
    assert kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"] == [
        {"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "db"}]
    kms.untag_resource(KeyId=meta["KeyId"], TagKeys=["team"])
    assert kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"] == [{"TagKey": "env", "TagValue": "prod"}]
    with pytest.raises(ClientError) as e:
        kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "aws:x", "TagValue": "y"}])
    assert error_of(e) == ("TagException", "Tags beginning with aws: are reserved")
    with pytest.raises(ClientError) as e:
        kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}])
    assert error_of(e) == ("TagException", "Duplicate tag keys")


def test_aws_managed_rds_key(kura):
    client = kura.client("kms", user="admin_b")
    meta = client.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]
    assert meta["KeyManager"] == "AWS"
    assert meta["Description"] == "Default key that protects my RDS database volumes when no other key is defined"
    # The same key on every later use.
    assert client.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["KeyId"] == meta["KeyId"]
    policy = json.loads(client.get_key_policy(KeyId=meta["KeyId"])["Policy"])
    assert policy["Id"] == "auto-rds-2"
    assert policy["Statement"][0]["Condition"]["StringEquals"]["kms:ViaService"] == f"rds.{REGION}.amazonaws.com"
    status = client.get_key_rotation_status(KeyId=meta["KeyId"])
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 365

    # Users can look, but not use it directly nor manage it.
    for call in (lambda: client.encrypt(KeyId="alias/aws/rds", Plaintext=b"x"),
                 lambda: client.disable_key(KeyId=meta["KeyId"]),
                 lambda: client.schedule_key_deletion(KeyId=meta["KeyId"]),
                 lambda: client.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=json.dumps(policy)),
                 lambda: client.enable_key_rotation(KeyId=meta["KeyId"]),
                 lambda: client.disable_key_rotation(KeyId=meta["KeyId"])):
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e)[0] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        client.delete_alias(AliasName="alias/aws/rds")
    assert error_of(e)[0] == "InvalidAliasNameException"
    assert client.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_unsupported_key_kinds_are_refused_clearly(kms):
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    assert error_of(e)[0] == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="NOPE")
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Origin="EXTERNAL")
    assert error_of(e)[0] == "UnsupportedOperationException"
