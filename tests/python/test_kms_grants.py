"""Grants: who they let in, with which constraints, and who may retire or revoke them."""

import json

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, ACCOUNT_B


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def arn(account, user):
    return f"arn:aws:iam::{account}:user/{user}"


NOBODY = arn(ACCOUNT_A, "nobody")
READER = arn(ACCOUNT_A, "reader")


def test_a_grant_lets_its_grantee_in_until_retired(kura, kms, new_key):
    key = new_key()
    nobody = kura.client("kms", user="nobody_a")
    with pytest.raises(ClientError) as e:
        nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert error_of(e)[0] == "AccessDeniedException"

    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, RetiringPrincipal=READER,
                             Operations=["Encrypt", "Decrypt"], Name="app-grant")
    assert len(grant["GrantId"]) == 64 and grant["GrantToken"]
    blob = nobody.encrypt(KeyId=key["Arn"], Plaintext=b"granted", GrantTokens=[grant["GrantToken"]])["CiphertextBlob"]
    assert nobody.decrypt(CiphertextBlob=blob)["Plaintext"] == b"granted"
    with pytest.raises(ClientError) as e:
        nobody.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256")
    assert error_of(e)[0] == "AccessDeniedException"

    [listed] = kms.list_grants(KeyId=key["KeyId"])["Grants"]
    assert listed["GrantId"] == grant["GrantId"]
    assert listed["KeyId"] == key["Arn"]
    assert listed["GranteePrincipal"] == NOBODY
    assert listed["RetiringPrincipal"] == READER
    assert listed["IssuingAccount"] == f"arn:aws:iam::{ACCOUNT_A}:root"
    assert sorted(listed["Operations"]) == ["Decrypt", "Encrypt"]
    assert listed["Name"] == "app-grant"

    # Retrying CreateGrant with the same name and properties returns the same grant.
    again = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, RetiringPrincipal=READER,
                             Operations=["Decrypt", "Encrypt"], Name="app-grant")
    assert again["GrantId"] == grant["GrantId"]

    retirable = kura.client("kms", user="reader_a").list_retirable_grants(RetiringPrincipal=READER)["Grants"]
    assert grant["GrantId"] in [g["GrantId"] for g in retirable]

    # The grantee may not retire it (its grant lacks RetireGrant); the retiring principal may.
    with pytest.raises(ClientError) as e:
        nobody.retire_grant(GrantToken=grant["GrantToken"])
    assert error_of(e)[0] == "AccessDeniedException"
    kura.client("kms", user="reader_a").retire_grant(KeyId=key["Arn"], GrantId=grant["GrantId"])
    assert kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    with pytest.raises(ClientError) as e:
        nobody.decrypt(CiphertextBlob=blob)
    assert error_of(e)[0] == "AccessDeniedException"


def test_grant_constraints_bind_the_encryption_context(kura, kms, new_key):
    key = new_key()
    nobody = kura.client("kms", user="nobody_a")
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"],
                     Constraints={"EncryptionContextSubset": {"app": "billing"}})
    nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext={"app": "billing"})
    nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext={"app": "billing", "extra": "ok"})
    for context in ({}, {"app": "web"}, {"APP": "billing"}):
        with pytest.raises(ClientError) as e:
            nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=context)
        assert error_of(e)[0] == "AccessDeniedException"

    other = new_key()
    kms.create_grant(KeyId=other["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"],
                     Constraints={"EncryptionContextEquals": {"app": "billing"}})
    nobody.encrypt(KeyId=other["Arn"], Plaintext=b"x", EncryptionContext={"app": "billing"})
    with pytest.raises(ClientError) as e:
        nobody.encrypt(KeyId=other["Arn"], Plaintext=b"x", EncryptionContext={"app": "billing", "extra": "no"})
    assert error_of(e)[0] == "AccessDeniedException"


def test_revoke_takes_effect_at_once(kura, kms, new_key):
    key = new_key()
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"])
    nobody = kura.client("kms", user="nobody_a")
    nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    with pytest.raises(ClientError) as e:
        nobody.encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert error_of(e)[0] == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    assert error_of(e)[0] == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.revoke_grant(KeyId=key["KeyId"], GrantId="not-a-grant-id")
    assert error_of(e)[0] == "InvalidGrantIdException"


def test_grants_cross_accounts(kura, kms, new_key):
    key = new_key()
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"for b")["CiphertextBlob"]
    outsider = kura.client("kms", user="admin_b")
    with pytest.raises(ClientError) as e:
        outsider.decrypt(CiphertextBlob=blob)
    assert error_of(e)[0] == "AccessDeniedException"
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=arn(ACCOUNT_B, "administrator"),
                             Operations=["Decrypt", "RetireGrant"])
    assert outsider.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for b"
    # The grantee can retire a grant that includes RetireGrant.
    outsider.retire_grant(GrantToken=grant["GrantToken"])
    with pytest.raises(ClientError) as e:
        outsider.decrypt(CiphertextBlob=blob)
    assert error_of(e)[0] == "AccessDeniedException"


def test_grants_can_delegate_only_what_they_have(kura, kms, new_key):
    key = new_key()
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["CreateGrant", "Encrypt"],
                     Constraints={"EncryptionContextSubset": {"tenant": "t1"}})
    nobody = kura.client("kms", user="nobody_a")
    nobody.create_grant(KeyId=key["Arn"], GranteePrincipal=READER, Operations=["Encrypt"],
                        Constraints={"EncryptionContextSubset": {"tenant": "t1"}})
    for operations, constraints in ((["Decrypt"], {"EncryptionContextSubset": {"tenant": "t1"}}),
                                    (["Encrypt"], None),
                                    (["Encrypt"], {"EncryptionContextSubset": {"tenant": "t2"}})):
        kwargs = {"Constraints": constraints} if constraints else {}
        with pytest.raises(ClientError) as e:
            nobody.create_grant(KeyId=key["Arn"], GranteePrincipal=READER, Operations=operations, **kwargs)
        assert error_of(e)[0] == "AccessDeniedException"


def test_grant_validation(kms, new_key):
    key = new_key()
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Sign"])
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Frobnicate"])
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal="has spaces", Operations=["Encrypt"])
    assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=["not-a-token"])
    assert error_of(e)[0] == "InvalidGrantTokenException"
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"], DryRun=True)
    assert error_of(e)[0] == "DryRunOperationException"
    assert kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"])
    assert error_of(e)[0] == "DisabledException"


def test_grant_for_aws_resource_condition(kms, new_key):
    """Seed 001's "Allow attachment of persistent resources" statement only allows grants
    that an integrated service creates; a user creating one directly is refused."""
    key = new_key()
    kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", BypassPolicyLockoutSafetyCheck=True,
                       Policy=json.dumps({"Version": "2012-10-17", "Statement": [
                           {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": arn(ACCOUNT_A, "administrator")},
                            "Action": ["kms:Describe*", "kms:Put*", "kms:List*", "kms:Get*"], "Resource": "*"},
                           {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
                            "Principal": {"AWS": arn(ACCOUNT_A, "administrator")},
                            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
                            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]}))
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=NOBODY, Operations=["Encrypt"])
    code, message = error_of(e)
    assert code == "AccessDeniedException" and "kms:CreateGrant" in message
