"""Authorization as AWS evaluates it: key policy as root of trust, identity policies where
the key policy lets the account delegate, explicit denies, cross-account calls."""

import json

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, ACCOUNT_B, REGION


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def user_arn(account, name):
    return f"arn:aws:iam::{account}:user/{name}"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT_A = {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
          "Action": "kms:*", "Resource": "*"}


def test_read_only_user_can_describe_but_not_encrypt(kura, new_key):
    meta = new_key()
    reader = kura.client("kms", user="reader_a")
    assert reader.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyId"] == meta["KeyId"]
    reader.list_keys()
    with pytest.raises(ClientError) as e:
        reader.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    assert error_of(e) == ("AccessDeniedException",
                           f"User: {user_arn(ACCOUNT_A, 'reader')} is not authorized to perform: kms:Encrypt "
                           f"on resource: {meta['Arn']} because no identity-based policy allows the kms:Encrypt action")
    with pytest.raises(ClientError) as e:
        reader.create_key()
    assert error_of(e) == ("AccessDeniedException",
                           f"User: {user_arn(ACCOUNT_A, 'reader')} is not authorized to perform: kms:CreateKey "
                           "because no identity-based policy allows the kms:CreateKey action")


def test_user_without_policies_can_do_nothing(kura):
    nobody = kura.client("kms", user="nobody_a")
    for call in (nobody.list_keys, nobody.list_aliases, lambda: nobody.generate_random(NumberOfBytes=8)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e)[0] == "AccessDeniedException"


def test_key_policy_naming_a_user_directly(kura, kms, new_key):
    meta = new_key()
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=policy(
        ROOT_A,
        {"Sid": "Nobody may encrypt", "Effect": "Allow", "Principal": {"AWS": user_arn(ACCOUNT_A, "nobody")},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}))
    nobody = kura.client("kms", user="nobody_a")
    blob = nobody.encrypt(KeyId=meta["Arn"], Plaintext=b"direct")["CiphertextBlob"]
    assert nobody.decrypt(CiphertextBlob=blob)["Plaintext"] == b"direct"
    with pytest.raises(ClientError) as e:
        nobody.generate_data_key(KeyId=meta["Arn"], KeySpec="AES_256")
    assert error_of(e)[0] == "AccessDeniedException"


def test_key_policy_without_the_account_ignores_iam(kura, kms, new_key):
    """Without a key-policy statement for the account, even an administrator's IAM
    policy grants nothing on the key: the key policy is the root of trust."""
    meta = new_key()
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", BypassPolicyLockoutSafetyCheck=True, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": user_arn(ACCOUNT_A, "reader")}, "Action": "kms:*", "Resource": "*"}))
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    assert error_of(e) == ("AccessDeniedException",
                           f"User: {user_arn(ACCOUNT_A, 'administrator')} is not authorized to perform: kms:Encrypt "
                           f"on resource: {meta['Arn']} because no resource-based policy allows the kms:Encrypt action")


def test_explicit_deny_in_key_policy_wins(kura, kms, new_key):
    meta = new_key()
    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=policy(
        ROOT_A,
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:EncryptionContext:app": "payroll"}}}))
    good = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"p", EncryptionContext={"app": "payroll"})["CiphertextBlob"]
    other = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"p", EncryptionContext={"app": "web"})["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=good, EncryptionContext={"app": "payroll"})["Plaintext"] == b"p"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=other, EncryptionContext={"app": "web"})
    code, message = error_of(e)
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in a resource-based policy")


def test_cross_account_needs_the_key_policy(kura, kms, new_key):
    meta = new_key()
    outsider = kura.client("kms", user="admin_b")
    with pytest.raises(ClientError) as e:
        outsider.encrypt(KeyId=meta["Arn"], Plaintext=b"x")
    assert error_of(e) == ("AccessDeniedException",
                           f"User: {user_arn(ACCOUNT_B, 'administrator')} is not authorized to perform: kms:Encrypt "
                           "on this resource because the resource does not exist in this Region, no resource-based "
                           "policies allow access, or a resource-based policy explicitly denies access")
    # A key id alone names a key of the caller's own account.
    with pytest.raises(ClientError) as e:
        outsider.describe_key(KeyId=meta["KeyId"])
    assert error_of(e)[0] == "NotFoundException"

    kms.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=policy(
        ROOT_A,
        {"Sid": "Allow account B", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}))
    blob = outsider.encrypt(KeyId=meta["Arn"], Plaintext=b"shared")["CiphertextBlob"]
    assert outsider.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    assert outsider.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["AWSAccountId"] == ACCOUNT_A
    # Only the operations AWS lets other accounts perform, and only those granted.
    with pytest.raises(ClientError) as e:
        outsider.generate_data_key(KeyId=meta["Arn"], KeySpec="AES_256")
    assert error_of(e)[0] == "AccessDeniedException"
