"""The IAM API (AWS Query protocol) driven by boto3 and the aws CLI v2: users, access
keys, roles, customer managed and AWS managed policies, attachments, inline policies, the
errors AWS answers with, authorization of IAM calls, and what policies change on KMS."""

import base64
import json
import uuid

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest
import urllib.error
import urllib.request

from kura_harness import ACCOUNT_A, ACCOUNT_B, USERS

ALLOW_ENCRYPT = {"Version": "2012-10-17",
                 "Statement": [{"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*"}]}


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(excinfo):
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def trust(principal):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]})


@pytest.fixture
def iam(kura):
    return kura.client("iam")


def client_for(kura, service, key_id, secret):
    return boto3.client(service, endpoint_url=kura.endpoint, region_name="ap-northeast-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def test_user_lifecycle(iam):
    name = unique("alice")
    created = iam.create_user(UserName=name, Path="/team/", Tags=[{"Key": "team", "Value": "blue"}])["User"]
    assert created["UserName"] == name
    assert created["Path"] == "/team/"
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/team/{name}"
    assert created["UserId"].startswith("AIDA")
    assert created["Tags"] == [{"Key": "team", "Value": "blue"}]
    got = iam.get_user(UserName=name)["User"]
    assert got["UserId"] == created["UserId"] and got["CreateDate"] == created["CreateDate"]
    # Names are unique regardless of case, and looked up regardless of case.
    assert iam.get_user(UserName=name.upper())["User"]["UserName"] == name
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_user(UserName=name.upper())
    assert error_of(e) == ("EntityAlreadyExists", 409, f"User with name {name} already exists.")
    listed = [u["UserName"] for u in iam.list_users(PathPrefix="/team/")["Users"]]
    assert name in listed
    assert "administrator" not in listed
    iam.delete_user(UserName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_user(UserName=name)
    assert error_of(e) == ("NoSuchEntity", 404, f"The user with name {name} cannot be found.")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_user(UserName=name)
    assert error_of(e)[0] == "NoSuchEntity"


def test_get_user_without_name_is_the_caller(iam):
    me = iam.get_user()["User"]
    assert me["UserName"] == "administrator"
    assert me["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/administrator"


@pytest.mark.parametrize("name,path", [
    ("bad name", "/"), ("x" * 65, "/"), ("", "/"), ("ok", "nopath"), ("ok", "/no-trailing"),
])
def test_bad_names_and_paths(iam, name, path):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_user(UserName=name, Path=path)
    code, status, message = error_of(e)
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("1 validation error detected: Value ")


def test_user_lifecycle_with_the_cli(kura):
    name = unique("cli-user")
    created = json.loads(kura.aws("iam", "create-user", "--user-name", name).stdout)["User"]
    assert created["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/{name}"
    got = json.loads(kura.aws("iam", "get-user", "--user-name", name).stdout)["User"]
    assert got["UserId"] == created["UserId"]
    users = json.loads(kura.aws("iam", "list-users").stdout)["Users"]
    assert name in [u["UserName"] for u in users]
    duplicate = kura.aws("iam", "create-user", "--user-name", name, check=False)
    assert duplicate.returncode != 0 and "EntityAlreadyExists" in duplicate.stderr
    kura.aws("iam", "delete-user", "--user-name", name)
    missing = kura.aws("iam", "get-user", "--user-name", name, check=False)
    assert missing.returncode != 0 and "NoSuchEntity" in missing.stderr


def test_list_users_pages(kura, iam):
    path = f"/{unique('page')}/"
    names = sorted(unique("u") for _ in range(5))
    for name in names:
        iam.create_user(UserName=name, Path=path)
    first = iam.list_users(PathPrefix=path, MaxItems=2)
    assert len(first["Users"]) == 2 and first["IsTruncated"] is True and first["Marker"]
    second = iam.list_users(PathPrefix=path, MaxItems=2, Marker=first["Marker"])
    assert [u["UserName"] for u in second["Users"]] == names[2:4]
    everything = [u["UserName"] for page in iam.get_paginator("list_users").paginate(
        PathPrefix=path, PaginationConfig={"PageSize": 2}) for u in page["Users"]]
    assert everything == names
    # The CLI pages on its own with --page-size.
    cli = json.loads(kura.aws("iam", "list-users", "--path-prefix", path, "--page-size", "2").stdout)
    assert [u["UserName"] for u in cli["Users"]] == names
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.list_users(MaxItems=0)
    assert error_of(e)[0] == "ValidationError"
    for name in names:
        iam.delete_user(UserName=name)


def test_access_keys(kura, iam):
    name = unique("keys")
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and key["Status"] == "Active"
    assert len(key["SecretAccessKey"]) == 40 and key["UserName"] == name
    # The new key works at once, for the new user.
    sts = client_for(kura, "sts", key["AccessKeyId"], key["SecretAccessKey"])
    assert sts.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/{name}"
    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in listed] == [(key["AccessKeyId"], "Active")]
    assert "SecretAccessKey" not in listed[0]
    # Deactivated keys stop authenticating; reactivated ones work again.
    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)
    kms = client_for(kura, "kms", key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.list_keys()
    assert error_of(e)[0] == "UnrecognizedClientException"
    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Active")
    assert sts.get_caller_identity()["Account"] == ACCOUNT_A
    # Two keys per user, as AWS's quota.
    second = iam.create_access_key(UserName=name)["AccessKey"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_access_key(UserName=name)
    assert error_of(e) == ("LimitExceeded", 409, "Cannot exceed quota for AccessKeysPerUser: 2")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_user(UserName=name)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete entity, must delete access keys first.")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_access_key(UserName="administrator", AccessKeyId=second["AccessKeyId"])
    assert error_of(e) == ("NoSuchEntity", 404,
                           f"The Access Key with id {second['AccessKeyId']} cannot be found.")
    for k in (key, second):
        iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.get_caller_identity()
    assert error_of(e)[0] == "InvalidClientTokenId"
    iam.delete_user(UserName=name)


def test_access_keys_with_the_cli(kura):
    name = unique("cli-keys")
    kura.aws("iam", "create-user", "--user-name", name)
    key = json.loads(kura.aws("iam", "create-access-key", "--user-name", name).stdout)["AccessKey"]
    listed = json.loads(kura.aws("iam", "list-access-keys", "--user-name", name).stdout)
    assert [k["AccessKeyId"] for k in listed["AccessKeyMetadata"]] == [key["AccessKeyId"]]
    kura.aws("iam", "update-access-key", "--user-name", name, "--access-key-id", key["AccessKeyId"],
             "--status", "Inactive")
    kura.aws("iam", "delete-access-key", "--user-name", name, "--access-key-id", key["AccessKeyId"])
    kura.aws("iam", "delete-user", "--user-name", name)


def test_roles(kura, iam):
    name = unique("Role")
    document = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(document),
                           Description="for tests", MaxSessionDuration=7200,
                           Tags=[{"Key": "k", "Value": "v"}])["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:role/{name}"
    assert role["RoleId"].startswith("AROA")
    assert role["AssumeRolePolicyDocument"] == document
    got = iam.get_role(RoleName=name)["Role"]
    assert got["MaxSessionDuration"] == 7200 and got["Description"] == "for tests"
    assert got["Tags"] == [{"Key": "k", "Value": "v"}]
    assert name in [r["RoleName"] for r in iam.list_roles()["Roles"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(document))
    assert error_of(e) == ("EntityAlreadyExists", 409, f"Role with name {name} already exists.")
    updated = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, "Action": "sts:AssumeRole"}]}
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(updated))
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == updated
    iam.put_role_policy(RoleName=name, PolicyName="enc", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_role(RoleName=name)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete entity, must delete policies first.")
    iam.delete_role_policy(RoleName=name, PolicyName="enc")
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_role(RoleName=name)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete entity, must detach all policies first.")
    iam.detach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    iam.delete_role(RoleName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_role(RoleName=name)
    assert error_of(e) == ("NoSuchEntity", 404, f"The role with name {name} cannot be found.")


@pytest.mark.parametrize("document,expected", [
    ("not json", "Syntax errors in policy."),
    (json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}}]}), "Has prohibited field Resource"),
    (json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}),
     "Missing required field Principal"),
    (trust(f"arn:aws:iam::{ACCOUNT_A}:user/no-such-user"),
     f'Invalid principal in policy: "AWS":"arn:aws:iam::{ACCOUNT_A}:user/no-such-user"'),
])
def test_malformed_trust_policies(iam, document, expected):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName=unique("Bad"), AssumeRolePolicyDocument=document)
    code, status, message = error_of(e)
    assert (code, status) == ("MalformedPolicyDocument", 400)
    assert expected in message


def test_role_validation(iam):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName=unique("R"), AssumeRolePolicyDocument=trust(ACCOUNT_A), MaxSessionDuration=100)
    assert error_of(e) == ("ValidationError", 400,
                           "1 validation error detected: Value '100' at 'maxSessionDuration' failed to satisfy "
                           "constraint: Member must have value greater than or equal to 3600")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName="bad/name", AssumeRolePolicyDocument=trust(ACCOUNT_A))
    assert error_of(e)[0] == "ValidationError"


def test_roles_with_the_cli(kura, tmp_path):
    name = unique("CliRole")
    path = tmp_path / "trust.json"
    path.write_text(trust(f"arn:aws:iam::{ACCOUNT_A}:root"))
    role = json.loads(kura.aws("iam", "create-role", "--role-name", name,
                               "--assume-role-policy-document", f"file://{path}").stdout)["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{ACCOUNT_A}:root"
    assert json.loads(kura.aws("iam", "get-role", "--role-name", name).stdout)["Role"]["Arn"] == role["Arn"]
    kura.aws("iam", "put-role-policy", "--role-name", name, "--policy-name", "inline",
             "--policy-document", json.dumps(ALLOW_ENCRYPT))
    names = json.loads(kura.aws("iam", "list-role-policies", "--role-name", name).stdout)["PolicyNames"]
    assert names == ["inline"]
    got = json.loads(kura.aws("iam", "get-role-policy", "--role-name", name, "--policy-name", "inline").stdout)
    assert got["PolicyDocument"] == ALLOW_ENCRYPT
    kura.aws("iam", "delete-role-policy", "--role-name", name, "--policy-name", "inline")
    kura.aws("iam", "delete-role", "--role-name", name)


def test_customer_managed_policies(iam):
    name = unique("Policy")
    document = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Enc", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}]}
    created = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document), Description="d")["Policy"]
    arn = f"arn:aws:iam::{ACCOUNT_A}:policy/{name}"
    assert created["Arn"] == arn and created["PolicyId"].startswith("ANPA")
    assert created["DefaultVersionId"] == "v1" and created["AttachmentCount"] == 0
    assert created["IsAttachable"] is True
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    assert policy["PolicyName"] == name and policy["Description"] == "d"
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == document and version["IsDefaultVersion"] is True
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_policy_version(PolicyArn=arn, VersionId="v2")
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))
    assert error_of(e) == ("EntityAlreadyExists", 409,
                           f"A policy called {name} already exists. Duplicate names are not allowed.")
    local = [p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"]]
    assert arn in local and "arn:aws:iam::aws:policy/AdministratorAccess" not in local
    aws = [p["Arn"] for p in iam.list_policies(Scope="AWS")["Policies"]]
    assert "arn:aws:iam::aws:policy/AdministratorAccess" in aws
    assert "arn:aws:iam::aws:policy/ReadOnlyAccess" in aws and arn not in aws
    everything = [p["Arn"] for p in iam.get_paginator("list_policies").paginate().build_full_result()["Policies"]]
    assert arn in everything and "arn:aws:iam::aws:policy/ReadOnlyAccess" in everything
    attached = [p["Arn"] for p in iam.list_policies(OnlyAttached=True)["Policies"]]
    assert "arn:aws:iam::aws:policy/AdministratorAccess" in attached and arn not in attached

    user = unique("holder")
    iam.create_user(UserName=user)
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    iam.attach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    listed = iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    assert listed == [{"PolicyName": name, "PolicyArn": arn},
                      {"PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_policy(PolicyArn=arn)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete a policy attached to entities.")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_user(UserName=user)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete entity, must detach all policies first.")
    iam.detach_user_policy(UserName=user, PolicyArn=arn)
    iam.detach_user_policy(UserName=user, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.detach_user_policy(UserName=user, PolicyArn=arn)
    assert error_of(e) == ("NoSuchEntity", 404, f"Policy {arn} was not found.")
    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_policy(PolicyArn=arn)
    assert error_of(e) == ("NoSuchEntity", 404, f"Policy {arn} was not found.")
    iam.delete_user(UserName=user)


def test_aws_managed_policies(iam):
    policy = iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")["Policy"]
    assert policy["PolicyName"] == "ReadOnlyAccess" and policy["DefaultVersionId"] == "v1"
    document = iam.get_policy_version(PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess",
                                      VersionId="v1")["PolicyVersion"]["Document"]
    assert document["Statement"][0]["Action"] == "*"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/PowerUserAccess")
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.attach_user_policy(UserName="nobody", PolicyArn="arn:aws:iam::aws:policy/PowerUserAccess")
    assert error_of(e) == ("NoSuchEntity", 404,
                           "Policy arn:aws:iam::aws:policy/PowerUserAccess does not exist or is not attachable.")


@pytest.mark.parametrize("document,expected", [
    ("{", "Syntax errors in policy."),
    (json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*"}]}),
     "Missing required field Resource"),
    (json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}),
     "Policy document should not specify a principal."),
    (json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Action": "kms:*", "Resource": "*"}]}),
     "Invalid Effect"),
    (json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "Encrypt", "Resource": "*"}]}),
     "Actions/Conditions must be prefaced by a vendor"),
])
def test_malformed_identity_policies(iam, document, expected):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_policy(PolicyName=unique("Bad"), PolicyDocument=document)
    code, status, message = error_of(e)
    assert (code, status) == ("MalformedPolicyDocument", 400)
    assert expected in message
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.put_user_policy(UserName="nobody", PolicyName="bad", PolicyDocument=document)
    assert error_of(e)[0] == "MalformedPolicyDocument"


def test_managed_policies_with_the_cli(kura, tmp_path):
    name = unique("CliPolicy")
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(ALLOW_ENCRYPT))
    policy = json.loads(kura.aws("iam", "create-policy", "--policy-name", name,
                                 "--policy-document", f"file://{path}").stdout)["Policy"]
    version = json.loads(kura.aws("iam", "get-policy-version", "--policy-arn", policy["Arn"],
                                  "--version-id", "v1").stdout)["PolicyVersion"]
    assert version["Document"] == ALLOW_ENCRYPT
    listed = json.loads(kura.aws("iam", "list-policies", "--scope", "Local").stdout)["Policies"]
    assert policy["Arn"] in [p["Arn"] for p in listed]
    aws = json.loads(kura.aws("iam", "list-policies", "--scope", "AWS").stdout)["Policies"]
    assert {"AdministratorAccess", "ReadOnlyAccess"} <= {p["PolicyName"] for p in aws}
    role = unique("CliRole")
    kura.aws("iam", "create-role", "--role-name", role, "--assume-role-policy-document", trust(ACCOUNT_A))
    kura.aws("iam", "attach-role-policy", "--role-name", role, "--policy-arn", policy["Arn"])
    attached = json.loads(kura.aws("iam", "list-attached-role-policies", "--role-name", role).stdout)
    assert attached["AttachedPolicies"] == [{"PolicyName": name, "PolicyArn": policy["Arn"]}]
    conflict = kura.aws("iam", "delete-policy", "--policy-arn", policy["Arn"], check=False)
    assert conflict.returncode != 0 and "DeleteConflict" in conflict.stderr
    kura.aws("iam", "detach-role-policy", "--role-name", role, "--policy-arn", policy["Arn"])
    kura.aws("iam", "delete-role", "--role-name", role)
    kura.aws("iam", "delete-policy", "--policy-arn", policy["Arn"])


def test_inline_user_policies(iam):
    user = unique("inline")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p1", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    iam.put_user_policy(UserName=user, PolicyName="p0", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == ["p0", "p1"]
    got = iam.get_user_policy(UserName=user, PolicyName="p1")
    assert (got["UserName"], got["PolicyName"], got["PolicyDocument"]) == (user, "p1", ALLOW_ENCRYPT)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.get_user_policy(UserName=user, PolicyName="nope")
    assert error_of(e) == ("NoSuchEntity", 404, "The user policy with name nope cannot be found.")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_user(UserName=user)
    assert error_of(e) == ("DeleteConflict", 409, "Cannot delete entity, must delete policies first.")
    # A user's inline policies are limited to 2048 characters in all (whitespace excluded).
    big = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": f"kms:Action{i:04}", "Resource": "*"} for i in range(60)]}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.put_user_policy(UserName=user, PolicyName="big", PolicyDocument=json.dumps(big))
    assert error_of(e) == ("LimitExceeded", 409, f"Maximum policy size of 2048 bytes exceeded for user {user}")
    for name in ("p0", "p1"):
        iam.delete_user_policy(UserName=user, PolicyName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_user_policy(UserName=user, PolicyName="p0")
    assert error_of(e)[0] == "NoSuchEntity"
    iam.delete_user(UserName=user)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    assert error_of(e) == ("NoSuchEntity", 404, f"The user with name {user} cannot be found.")


def test_inline_policies_with_the_cli(kura):
    user = unique("cli-inline")
    kura.aws("iam", "create-user", "--user-name", user)
    kura.aws("iam", "put-user-policy", "--user-name", user, "--policy-name", "p",
             "--policy-document", json.dumps(ALLOW_ENCRYPT))
    assert json.loads(kura.aws("iam", "list-user-policies", "--user-name", user).stdout)["PolicyNames"] == ["p"]
    got = json.loads(kura.aws("iam", "get-user-policy", "--user-name", user, "--policy-name", "p").stdout)
    assert got["PolicyDocument"] == ALLOW_ENCRYPT
    kura.aws("iam", "delete-user-policy", "--user-name", user, "--policy-name", "p")
    kura.aws("iam", "delete-user", "--user-name", user)


def test_a_user_without_iam_permissions_is_denied(kura):
    nobody = kura.client("iam", user="nobody_a")
    name = unique("x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        nobody.create_user(UserName=name)
    assert error_of(e) == ("AccessDenied", 403,
                           f"User: arn:aws:iam::{ACCOUNT_A}:user/nobody is not authorized to perform: "
                           f"iam:CreateUser on resource: arn:aws:iam::{ACCOUNT_A}:user/{name} because no "
                           "identity-based policy allows the iam:CreateUser action")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        nobody.list_users()
    assert error_of(e)[:2] == ("AccessDenied", 403)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        nobody.get_user()
    assert error_of(e)[0] == "AccessDenied"
    denied = kura.aws("iam", "list-roles", user="nobody_a", check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr
    # ReadOnlyAccess allows reading IAM, not changing it.
    reader = kura.client("iam", user="reader_a")
    assert "administrator" in [u["UserName"] for u in reader.list_users()["Users"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        reader.create_user(UserName=name)
    assert error_of(e)[0] == "AccessDenied"


def test_explicit_deny_in_an_inline_policy(kura, iam):
    name = unique("denied")
    iam.create_user(UserName=name)
    iam.attach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    iam.put_user_policy(UserName=name, PolicyName="no-users", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "iam:CreateUser", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    theirs = client_for(kura, "iam", key["AccessKeyId"], key["SecretAccessKey"])
    assert theirs.list_users()["Users"]
    target = unique("y")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        theirs.create_user(UserName=target)
    assert error_of(e) == ("AccessDenied", 403,
                           f"User: arn:aws:iam::{ACCOUNT_A}:user/{name} is not authorized to perform: "
                           f"iam:CreateUser on resource: arn:aws:iam::{ACCOUNT_A}:user/{target} with an "
                           "explicit deny in an identity-based policy")
    iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    iam.delete_user_policy(UserName=name, PolicyName="no-users")
    iam.detach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    iam.delete_user(UserName=name)


def test_accounts_are_separate(kura, iam):
    name = unique("only-in-a")
    iam.create_user(UserName=name)
    policy = iam.create_policy(PolicyName=unique("APolicy"), PolicyDocument=json.dumps(ALLOW_ENCRYPT))["Policy"]
    iam_b = kura.client("iam", user="admin_b")
    assert name not in [u["UserName"] for u in iam_b.list_users()["Users"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam_b.get_user(UserName=name)
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam_b.attach_user_policy(UserName="administrator", PolicyArn=policy["Arn"])
    assert error_of(e)[0] == "NoSuchEntity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam_b.get_policy(PolicyArn=policy["Arn"])
    assert error_of(e)[0] == "AccessDenied"
    assert policy["Arn"] not in [p["Arn"] for p in iam_b.list_policies(Scope="Local")["Policies"]]
    iam.delete_user(UserName=name)
    iam.delete_policy(PolicyArn=policy["Arn"])


def test_managed_policy_changes_what_nobody_may_do_on_kms(kura, iam):
    """A customer managed policy allowing kms:Encrypt, attached to `nobody`, lets it
    encrypt under a key whose policy delegates to the account; detaching takes it away."""
    key_id = kura.client("kms").create_key(Description="iam policy test")["KeyMetadata"]["KeyId"]
    plaintext = base64.b64encode(b"secret").decode()

    def encrypt():
        return kura.aws("kms", "encrypt", "--key-id", key_id, "--plaintext", plaintext,
                        user="nobody_a", check=False)

    denied = encrypt()
    assert denied.returncode != 0 and "AccessDeniedException" in denied.stderr
    assert "because no identity-based policy allows the kms:Encrypt action" in denied.stderr
    policy = iam.create_policy(PolicyName=unique("NobodyEncrypt"), PolicyDocument=json.dumps(ALLOW_ENCRYPT))["Policy"]
    iam.attach_user_policy(UserName="nobody", PolicyArn=policy["Arn"])
    try:
        allowed = encrypt()
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout)["KeyId"].endswith(key_id)
        # Encrypt only: Decrypt stays denied.
        blob = json.loads(allowed.stdout)["CiphertextBlob"]
        decrypt = kura.aws("kms", "decrypt", "--ciphertext-blob", blob, user="nobody_a", check=False)
        assert decrypt.returncode != 0 and "AccessDeniedException" in decrypt.stderr
    finally:
        iam.detach_user_policy(UserName="nobody", PolicyArn=policy["Arn"])
    denied = encrypt()
    assert denied.returncode != 0 and "AccessDeniedException" in denied.stderr
    iam.delete_policy(PolicyArn=policy["Arn"])


def test_inline_policy_changes_what_a_user_may_do_on_kms(kura, iam):
    key_id = kura.client("kms").create_key()["KeyMetadata"]["KeyId"]
    name = unique("kms-user")
    iam.create_user(UserName=name)
    access = iam.create_access_key(UserName=name)["AccessKey"]
    kms = client_for(kura, "kms", access["AccessKeyId"], access["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_of(e)[0] == "AccessDeniedException"
    iam.put_user_policy(UserName=name, PolicyName="enc", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    assert kms.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].endswith(key_id)
    # An explicit deny added next to it wins.
    iam.put_user_policy(UserName=name, PolicyName="deny", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]}))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert "with an explicit deny in an identity-based policy" in error_of(e)[2]
    for policy in ("enc", "deny"):
        iam.delete_user_policy(UserName=name, PolicyName=policy)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_of(e)[0] == "AccessDeniedException"
    iam.delete_access_key(UserName=name, AccessKeyId=access["AccessKeyId"])
    iam.delete_user(UserName=name)


def test_everything_survives_a_restart(fresh_kura):
    iam = fresh_kura.client("iam")
    iam.create_user(UserName="alice", Path="/p/", Tags=[{"Key": "k", "Value": "v"}])
    key = iam.create_access_key(UserName="alice")["AccessKey"]
    policy = iam.create_policy(PolicyName="Enc", PolicyDocument=json.dumps(ALLOW_ENCRYPT))["Policy"]
    iam.attach_user_policy(UserName="alice", PolicyArn=policy["Arn"])
    iam.put_user_policy(UserName="alice", PolicyName="inline", PolicyDocument=json.dumps(ALLOW_ENCRYPT))
    role = iam.create_role(RoleName="Admin", AssumeRolePolicyDocument=trust(ACCOUNT_A))["Role"]
    iam.attach_role_policy(RoleName="Admin", PolicyArn=policy["Arn"])
    # API attachments to a configuration-declared user survive the configuration being
    # applied again at start.
    iam.attach_user_policy(UserName="nobody", PolicyArn=policy["Arn"])
    fresh_kura.kill9()
    fresh_kura.start()
    iam = fresh_kura.client("iam")
    user = iam.get_user(UserName="alice")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/p/alice" and user["Tags"] == [{"Key": "k", "Value": "v"}]
    assert iam.get_role(RoleName="Admin")["Role"]["RoleId"] == role["RoleId"]
    assert iam.get_policy(PolicyArn=policy["Arn"])["Policy"]["AttachmentCount"] == 3
    assert iam.list_user_policies(UserName="alice")["PolicyNames"] == ["inline"]
    assert [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName="nobody")["AttachedPolicies"]] \
        == [policy["Arn"]]
    sts = client_for(fresh_kura, "sts", key["AccessKeyId"], key["SecretAccessKey"])
    assert sts.get_caller_identity()["Arn"] == user["Arn"]
    # The key policy-delegated KMS permission follows the attached policy.
    key_id = fresh_kura.client("kms").create_key()["KeyMetadata"]["KeyId"]
    nobody_kms = fresh_kura.client("kms", user="nobody_a")
    assert nobody_kms.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].endswith(key_id)


def test_unknown_action(kura):
    _, _, key_id, secret, _ = USERS["admin_a"]
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=kura.endpoint + "/", data="Action=CreateGroup&Version=2010-05-08&GroupName=g",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(key_id, secret), "iam", "us-east-1").add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=prepared.body.encode(), method="POST",
                                 headers=dict(prepared.headers))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(raw, timeout=10)
    body = e.value.read().decode()
    assert e.value.code == 400
    assert "<Code>InvalidAction</Code>" in body
    assert "The action CreateGroup is not valid for this web service." in body
