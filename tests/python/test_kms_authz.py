"""Authorization as AWS evaluates it: key policy as root of trust, identity policies where
the key policy lets the account delegate, explicit denies, cross-account calls."""

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, ACCOUNT_B, REGION, USERS


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


def seed_key_policy(role_arn, grant_actions=True):
    """Account B's key policy of seed 001 (SEEDS.md point 18), as the report pastes it,
    after the default statement for B itself."""
    use = ["kms:CreateGrant", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
           "kms:DescribeKey"]
    attach = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    if not grant_actions:
        use, attach = [a for a in use if a != "kms:CreateGrant"], ["kms:ListGrants", "kms:RevokeGrant"]
    return policy(
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": role_arn},
         "Action": use, "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow", "Principal": {"AWS": role_arn},
         "Action": attach, "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}})


def seed_iam_policy(key_arn, grant_actions=True):
    """Account A's IAM policy `KMSCrossAccountAccess` of seed 001 (SEEDS.md point 19)."""
    use = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey",
           "kms:CreateGrant", "kms:RetireGrant"]
    attach = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    if not grant_actions:
        use, attach = [a for a in use if a != "kms:CreateGrant"], ["kms:ListGrants", "kms:RevokeGrant"]
    return policy(
        {"Sid": "AllowUseOfTheKey", "Effect": "Allow", "Action": use, "Resource": [key_arn]},
        {"Sid": "AllowAttachmentOfPersistentResources", "Effect": "Allow", "Action": attach, "Resource": [key_arn],
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}})


def test_seed_001_cross_account_key_for_a_role(fresh_kura, tmp_path):
    """SEEDS.md points 18-20 and 24 with real clients: a key in account B whose key policy
    names role Admin of account A, the IAM policy KMSCrossAccountAccess on that role in A;
    the role's session (boto3, and an aws CLI profile with role_arn) uses the key; taking
    kms:CreateGrant from either side refuses CreateGrant with AWS's message for that side;
    removing both afterwards locks A out again."""
    kura = fresh_kura
    iam_a = kura.client("iam")
    role_arn = iam_a.create_role(RoleName="Admin", AssumeRolePolicyDocument=policy({
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"},
        "Action": "sts:AssumeRole"}))["Role"]["Arn"]
    kms_b = kura.client("kms", user="admin_b")
    key = kms_b.create_key(Description="CrossAccountCMK", Policy=seed_key_policy(role_arn))["KeyMetadata"]
    kms_b.create_alias(AliasName="alias/CrossAccountCMK", TargetKeyId=key["KeyId"])
    full = iam_a.create_policy(PolicyName="KMSCrossAccountAccess",
                               PolicyDocument=seed_iam_policy(key["Arn"]))["Policy"]["Arn"]
    iam_a.attach_role_policy(RoleName="Admin", PolicyArn=full)

    credentials = kura.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="seed-001")["Credentials"]
    session = f"arn:aws:sts::{ACCOUNT_A}:assumed-role/Admin/seed-001"
    role = boto3.client("kms", endpoint_url=kura.endpoint, region_name=REGION,
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])
    context = {"aws:rds:db-id": "db-SEED001"}
    assert role.describe_key(KeyId=key["Arn"])["KeyMetadata"]["AWSAccountId"] == ACCOUNT_B
    blob = role.encrypt(KeyId=key["Arn"], Plaintext=b"moved", EncryptionContext=context)["CiphertextBlob"]
    assert role.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"moved"
    assert role.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256", EncryptionContext=context)["KeyId"] == key["Arn"]
    grant = role.create_grant(KeyId=key["Arn"], GranteePrincipal=role_arn, RetiringPrincipal=role_arn,
                              Operations=["Decrypt"], Constraints={"EncryptionContextSubset": context})
    assert grant["GrantId"]
    role.retire_grant(KeyId=key["Arn"], GrantId=grant["GrantId"])

    # The same through an aws CLI profile with role_arn + source_profile, its AssumeRole sent
    # to kura by the endpoint rule set the server wrote (AWS_DATA_PATH, see README).
    _, _, key_id, secret, _ = USERS["admin_a"]
    config = tmp_path / "aws-config"
    config.write_text(f"[profile base]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n"
                      f"[profile admin-role]\nrole_arn = {role_arn}\nsource_profile = base\n"
                      f"role_session_name = seed-001-cli\n")
    def as_role(*args, check=True):
        run_env = {"AWS_CONFIG_FILE": str(config), "AWS_DATA_PATH": str(kura.data_dir.resolve() / "aws-cli")}
        result = kura.aws("--profile", "admin-role", *args, env=run_env, check=False)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    described = json.loads(as_role("kms", "describe-key", "--key-id", key["Arn"]).stdout)
    assert described["KeyMetadata"]["Arn"] == key["Arn"]
    cli_grant = json.loads(as_role("kms", "create-grant", "--key-id", key["Arn"], "--grantee-principal", role_arn,
                                   "--operations", "Decrypt").stdout)
    assert cli_grant["GrantId"]

    refused_message = (f"User: {session} is not authorized to perform: kms:CreateGrant on this resource because the "
                       "resource does not exist in this Region, no resource-based policies allow access, or a "
                       "resource-based policy explicitly denies access")
    # A's side without kms:CreateGrant: AWS's identity-policy denial, naming the key.
    partial = iam_a.create_policy(PolicyName="KMSCrossAccountAccessNoGrant",
                                  PolicyDocument=seed_iam_policy(key["Arn"], grant_actions=False))["Policy"]["Arn"]
    iam_a.detach_role_policy(RoleName="Admin", PolicyArn=full)
    iam_a.attach_role_policy(RoleName="Admin", PolicyArn=partial)
    with pytest.raises(ClientError) as e:
        role.create_grant(KeyId=key["Arn"], GranteePrincipal=role_arn, Operations=["Decrypt"])
    assert error_of(e) == ("AccessDeniedException",
                           f"User: {session} is not authorized to perform: kms:CreateGrant on resource: {key['Arn']} "
                           "because no identity-based policy allows the kms:CreateGrant action")
    assert role.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"moved"
    iam_a.detach_role_policy(RoleName="Admin", PolicyArn=partial)
    iam_a.attach_role_policy(RoleName="Admin", PolicyArn=full)

    # B's side without kms:CreateGrant: exactly the message of SEEDS.md point 20.
    kms_b.put_key_policy(KeyId=key["KeyId"], PolicyName="default",
                         Policy=seed_key_policy(role_arn, grant_actions=False))
    with pytest.raises(ClientError) as e:
        role.create_grant(KeyId=key["Arn"], GranteePrincipal=role_arn, Operations=["Decrypt"])
    assert error_of(e) == ("AccessDeniedException", refused_message)
    refused = as_role("kms", "create-grant", "--key-id", key["Arn"], "--grantee-principal", role_arn,
                      "--operations", "Decrypt", check=False)
    assert refused.returncode != 0
    assert refused_message.replace(session, f"arn:aws:sts::{ACCOUNT_A}:assumed-role/Admin/seed-001-cli") \
        in " ".join(refused.stderr.split())
    assert role.encrypt(KeyId=key["Arn"], Plaintext=b"still", EncryptionContext=context)["CiphertextBlob"]
    # A user of A that B's key policy does not name at all: the seed's very message.
    with pytest.raises(ClientError) as e:
        kura.client("kms").create_grant(KeyId=key["Arn"], GranteePrincipal=role_arn, Operations=["Decrypt"])
    assert error_of(e) == ("AccessDeniedException",
                           f"User: arn:aws:iam::{ACCOUNT_A}:user/administrator is not authorized to perform: "
                           "kms:CreateGrant on this resource because the resource does not exist in this Region, no "
                           "resource-based policies allow access, or a resource-based policy explicitly denies access")

    # After the move (point 24): both sides' permissions removed, A is locked out again.
    kms_b.put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=policy(
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, "Action": "kms:*", "Resource": "*"}))
    iam_a.detach_role_policy(RoleName="Admin", PolicyArn=full)
    # A grant is a permission of its own: the one made with the CLI still lets the role
    # decrypt, until B revokes it.
    assert role.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"moved"
    kms_b.revoke_grant(KeyId=key["KeyId"], GrantId=cli_grant["GrantId"])
    for call in (lambda: role.encrypt(KeyId=key["Arn"], Plaintext=b"x"),
                 lambda: role.decrypt(CiphertextBlob=blob, EncryptionContext=context),
                 lambda: role.describe_key(KeyId=key["Arn"])):
        with pytest.raises(ClientError) as e:
            call()
        code, message = error_of(e)
        assert code == "AccessDeniedException"
        assert message.startswith(f"User: {session} is not authorized to perform: kms:")
        assert message.endswith("on this resource because the resource does not exist in this Region, no "
                                "resource-based policies allow access, or a resource-based policy explicitly "
                                "denies access")
    # B itself still uses its key.
    assert kms_b.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"moved"
