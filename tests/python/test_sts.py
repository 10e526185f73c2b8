"""STS (AWS Query protocol) with boto3 and the aws CLI v2: GetCallerIdentity, AssumeRole
in the same account and across accounts (trust policy + identity policy), temporary
credentials accepted by SigV4 until they expire, an aws CLI profile with `role_arn` +
`source_profile`, and sessions kept across a restart."""

import datetime
import json
import os
import pathlib
import subprocess
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pytest

from kura_harness import ACCOUNT_A, ACCOUNT_B, AWS_CLI, REGION, USERS, restart_shifted

ADMINISTRATOR_ACCESS = "arn:aws:iam::aws:policy/AdministratorAccess"
ALLOW_KMS_LIST = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": ["kms:ListKeys", "kms:CreateKey"], "Resource": "*"}]}


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(excinfo):
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def trust(*principals):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": list(principals)}, "Action": "sts:AssumeRole"}]})


def session_client(kura, service, credentials):
    return boto3.client(service, endpoint_url=kura.endpoint, region_name=REGION,
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"],
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def session_env(credentials):
    return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"]}


def make_role(iam, name, trusted, policies=(), inline=None, **kwargs):
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trusted, **kwargs)["Role"]
    for arn in policies:
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    if inline:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    return role


def test_get_caller_identity_of_users(kura):
    for user, (account, name, _, _, _) in USERS.items():
        identity = kura.client("sts", user=user).get_caller_identity()
        assert identity["Account"] == account
        assert identity["Arn"] == f"arn:aws:iam::{account}:user/{name}"
        assert identity["UserId"].startswith("AIDA")
    # No permission is needed, as on AWS: `nobody` has no policy at all.
    cli = json.loads(kura.aws("sts", "get-caller-identity", user="nobody_a").stdout)
    assert cli["Arn"] == f"arn:aws:iam::{ACCOUNT_A}:user/nobody"


def test_assume_role_in_the_same_account(kura):
    iam = kura.client("iam")
    name = unique("Direct")
    role = make_role(iam, name, trust(f"arn:aws:iam::{ACCOUNT_A}:user/nobody"), inline=ALLOW_KMS_LIST)
    # The trust policy names `nobody` itself: no identity policy is needed.
    sts = kura.client("sts", user="nobody_a")
    assumed = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="my-session", DurationSeconds=900)
    credentials = assumed["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert len(credentials["SecretAccessKey"]) == 40 and len(credentials["SessionToken"]) > 100
    remaining = (credentials["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 880 < remaining <= 901
    assert assumed["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/{name}/my-session"
    assert assumed["AssumedRoleUser"]["AssumedRoleId"] == f"{role['RoleId']}:my-session"
    identity = session_client(kura, "sts", credentials).get_caller_identity()
    assert identity == {**identity, "Account": ACCOUNT_A, "UserId": f"{role['RoleId']}:my-session",
                        "Arn": f"arn:aws:sts::{ACCOUNT_A}:assumed-role/{name}/my-session"}
    # The session has the role's permissions, not the caller's.
    kms = session_client(kura, "kms", credentials)
    assert "Keys" in kms.list_keys()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms.describe_key(KeyId="alias/aws/rds")
    code, _, message = error_of(e)
    assert code == "AccessDeniedException"
    assert message.startswith(f"User: arn:aws:sts::{ACCOUNT_A}:assumed-role/{name}/my-session is not authorized")
    # One hour by default.
    issued = kura.client("sts", user="nobody_a").assume_role(RoleArn=role["Arn"], RoleSessionName="again")
    remaining = (issued["Credentials"]["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 3580 < remaining <= 3601


def test_trusting_the_account_needs_an_identity_policy(kura):
    iam = kura.client("iam")
    name = unique("ByAccount")
    role = make_role(iam, name, trust(f"arn:aws:iam::{ACCOUNT_A}:root"), policies=[ADMINISTRATOR_ACCESS])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kura.client("sts", user="nobody_a").assume_role(RoleArn=role["Arn"], RoleSessionName="s1")
    assert error_of(e) == ("AccessDenied", 403,
                           f"User: arn:aws:iam::{ACCOUNT_A}:user/nobody is not authorized to perform: "
                           f"sts:AssumeRole on resource: {role['Arn']} because no identity-based policy "
                           "allows the sts:AssumeRole action")
    # The administrator's AdministratorAccess allows sts:AssumeRole.
    assumed = kura.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="admin")
    assert session_client(kura, "sts", assumed["Credentials"]).get_caller_identity()["Account"] == ACCOUNT_A
    # An explicit deny in the caller's policies wins over the trust policy.
    iam.put_user_policy(UserName="nobody", PolicyName="allow-assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}]}))
    try:
        kura.client("sts", user="nobody_a").assume_role(RoleArn=role["Arn"], RoleSessionName="s2")
        iam.put_user_policy(UserName="nobody", PolicyName="deny-assume", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "sts:*", "Resource": "*"}]}))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            kura.client("sts", user="nobody_a").assume_role(RoleArn=role["Arn"], RoleSessionName="s3")
        assert error_of(e)[2].endswith("with an explicit deny in an identity-based policy")
    finally:
        for policy in ("allow-assume", "deny-assume"):
            try:
                iam.delete_user_policy(UserName="nobody", PolicyName=policy)
            except botocore.exceptions.ClientError:
                pass


def test_cross_account_assume_role(kura):
    """A role in account A trusting account B: B's callers need B's own permission too."""
    iam_a = kura.client("iam")
    iam_b = kura.client("iam", user="admin_b")
    name = unique("CrossAccount")
    role = make_role(iam_a, name, trust(f"arn:aws:iam::{ACCOUNT_B}:root"), inline=ALLOW_KMS_LIST)
    assumed = kura.client("sts", user="admin_b").assume_role(RoleArn=role["Arn"], RoleSessionName="from-b")
    identity = session_client(kura, "sts", assumed["Credentials"]).get_caller_identity()
    assert identity["Account"] == ACCOUNT_A
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/{name}/from-b"
    keys = session_client(kura, "kms", assumed["Credentials"]).list_keys()["Keys"]
    assert all(f":{ACCOUNT_A}:" in k["KeyArn"] for k in keys)
    # A user of B without any policy is refused, though its account is trusted.
    plain = unique("plain-b")
    iam_b.create_user(UserName=plain)
    access = iam_b.create_access_key(UserName=plain)["AccessKey"]
    plain_sts = boto3.client("sts", endpoint_url=kura.endpoint, region_name=REGION,
                             aws_access_key_id=access["AccessKeyId"], aws_secret_access_key=access["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        plain_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="plain")
    assert error_of(e)[2].endswith("because no identity-based policy allows the sts:AssumeRole action")
    # Even a trust policy naming that user directly needs B's identity policy across accounts.
    iam_a.update_assume_role_policy(RoleName=name, PolicyDocument=trust(f"arn:aws:iam::{ACCOUNT_B}:user/{plain}"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        plain_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="plain")
    assert error_of(e)[0] == "AccessDenied"
    iam_b.put_user_policy(UserName=plain, PolicyName="assume", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}]}))
    assert plain_sts.assume_role(RoleArn=role["Arn"], RoleSessionName="plain")["Credentials"]["AccessKeyId"]
    # B's administrator is no longer trusted: the trust policy names only `plain`.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        kura.client("sts", user="admin_b").assume_role(RoleArn=role["Arn"], RoleSessionName="from-b")
    assert error_of(e) == ("AccessDenied", 403,
                           f"User: arn:aws:iam::{ACCOUNT_B}:user/administrator is not authorized to perform: "
                           f"sts:AssumeRole on resource: {role['Arn']}")


def test_assume_role_refusals(kura):
    iam = kura.client("iam")
    name = unique("Limits")
    role = make_role(iam, name, trust(f"arn:aws:iam::{ACCOUNT_A}:user/administrator"), policies=[ADMINISTRATOR_ACCESS])
    sts = kura.client("sts")
    missing = f"arn:aws:iam::{ACCOUNT_A}:role/{unique('Nope')}"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.assume_role(RoleArn=missing, RoleSessionName="s1")
    assert error_of(e) == ("AccessDenied", 403,
                           f"User: arn:aws:iam::{ACCOUNT_A}:user/administrator is not authorized to perform: "
                           f"sts:AssumeRole on resource: {missing}")
    for kwargs, fragment in [
        ({"RoleSessionName": "x"}, "Member must have length greater than or equal to 2"),
        ({"RoleSessionName": "bad name"}, "Member must satisfy regular expression pattern"),
        ({"RoleSessionName": "ok", "DurationSeconds": 899}, "Member must have value greater than or equal to 900"),
        ({"RoleSessionName": "ok", "DurationSeconds": 7200},
         "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sts.assume_role(RoleArn=role["Arn"], **kwargs)
        code, status, message = error_of(e)
        assert (code, status) == ("ValidationError", 400) and fragment in message, message
    # Role chaining: a session may assume a role for at most one hour.
    session = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="first")["Credentials"]
    long_role = make_role(iam, unique("Long"), trust(f"arn:aws:iam::{ACCOUNT_A}:root"), MaxSessionDuration=7200)
    chained = session_client(kura, "sts", session)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        chained.assume_role(RoleArn=long_role["Arn"], RoleSessionName="second", DurationSeconds=7200)
    assert "role chaining" in error_of(e)[2]
    second = chained.assume_role(RoleArn=long_role["Arn"], RoleSessionName="second")
    assert second["AssumedRoleUser"]["Arn"].endswith(f"/{long_role['RoleName']}/second")
    # With the CLI too.
    denied = kura.aws("sts", "assume-role", "--role-arn", role["Arn"], "--role-session-name", "s1",
                      user="nobody_a", check=False)
    assert denied.returncode != 0 and "AccessDenied" in denied.stderr
    ok = json.loads(kura.aws("sts", "assume-role", "--role-arn", role["Arn"], "--role-session-name", "cli").stdout)
    assert ok["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/{name}/cli"
    cli_identity = json.loads(kura.aws("sts", "get-caller-identity", env=session_env(ok["Credentials"])).stdout)
    assert cli_identity["Arn"] == ok["AssumedRoleUser"]["Arn"]


def test_invalid_session_tokens_are_refused(kura):
    iam = kura.client("iam")
    role = make_role(iam, unique("Tokens"), trust(f"arn:aws:iam::{ACCOUNT_A}:user/administrator"),
                     policies=[ADMINISTRATOR_ACCESS])
    credentials = kura.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="tokens")["Credentials"]
    tampered = {**credentials, "SessionToken": credentials["SessionToken"][:-4] + "AAAA"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session_client(kura, "kms", tampered).list_keys()
    assert error_of(e)[:2] == ("UnrecognizedClientException", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        session_client(kura, "sts", tampered).get_caller_identity()
    assert error_of(e)[:2] == ("InvalidClientTokenId", 403)
    # Temporary credentials without their token are refused too.
    no_token = boto3.client("kms", endpoint_url=kura.endpoint, region_name=REGION,
                            aws_access_key_id=credentials["AccessKeyId"],
                            aws_secret_access_key=credentials["SecretAccessKey"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        no_token.list_keys()
    assert error_of(e)[0] == "UnrecognizedClientException"
    # With the CLI.
    env = session_env(tampered)
    refused = kura.aws("kms", "list-keys", env=env, check=False)
    assert refused.returncode != 0 and "UnrecognizedClientException" in refused.stderr
    assert kura.aws("kms", "list-keys", env=session_env(credentials)).returncode == 0


def aws_data_path(kura):
    """The AWS_DATA_PATH `kura serve` prints in its banner."""
    [line] = [line for line in kura.banner.splitlines() if "export AWS_DATA_PATH=" in line]
    return line.split("export AWS_DATA_PATH=", 1)[1].split()[0]


def cli(kura, home, config, *args):
    """The aws CLI with its own config file and no credentials in the environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
        "AWS_MAX_ATTEMPTS": "1",
        # aws CLI 2.9 (Debian 12) sends the AssumeRole call of a `role_arn` profile to AWS's
        # own STS endpoint whatever --endpoint-url says (CLI 2.13+ reads `endpoint_url` from
        # the profile instead). `kura serve` writes an STS endpoint rule set naming itself
        # into <data-dir>/aws-cli, and prints the AWS_DATA_PATH line that sends it to kura.
        "AWS_DATA_PATH": aws_data_path(kura),
    }
    return subprocess.run([AWS_CLI, "--endpoint-url", kura.endpoint, "--output", "json", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cli_profile_with_role_arn_and_source_profile(kura, tmp_path):
    """The seed's set-up: role `Admin` in account A, used through a CLI profile."""
    iam = kura.client("iam")
    try:
        iam.get_role(RoleName="Admin")
    except botocore.exceptions.ClientError:
        make_role(iam, "Admin", trust(f"arn:aws:iam::{ACCOUNT_A}:root"), policies=[ADMINISTRATOR_ACCESS])
    _, _, key_id, secret, _ = USERS["admin_a"]
    config = tmp_path / "config"
    config.write_text(
        f"[profile base]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\nregion = {REGION}\n\n"
        f"[profile admin-role]\nrole_arn = arn:aws:iam::{ACCOUNT_A}:role/Admin\nsource_profile = base\n"
        f"role_session_name = seed-admin\nregion = {REGION}\n\n"
        f"[profile nobody]\naws_access_key_id = {USERS['nobody_a'][2]}\n"
        f"aws_secret_access_key = {USERS['nobody_a'][3]}\nregion = {REGION}\n\n"
        f"[profile nobody-role]\nrole_arn = arn:aws:iam::{ACCOUNT_A}:role/Admin\nsource_profile = nobody\n"
        f"region = {REGION}\n")
    # The rule set the server wrote, naming its own endpoint.
    data_path = pathlib.Path(aws_data_path(kura))
    assert data_path == kura.data_dir.resolve() / "aws-cli"
    rules = json.loads((data_path / "sts" / "2011-06-15" / "endpoint-rule-set-1.json").read_text())
    assert rules["rules"][-1]["endpoint"]["url"] == kura.endpoint
    identity = cli(kura, tmp_path, config, "--profile", "admin-role", "sts", "get-caller-identity")
    assert identity.returncode == 0, identity.stderr
    assert json.loads(identity.stdout)["Arn"] == f"arn:aws:sts::{ACCOUNT_A}:assumed-role/Admin/seed-admin"
    keys = cli(kura, tmp_path, config, "--profile", "admin-role", "kms", "list-keys")
    assert keys.returncode == 0, keys.stderr
    created = cli(kura, tmp_path, config, "--profile", "admin-role", "kms", "create-key", "--description", "by role")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["KeyMetadata"]["AWSAccountId"] == ACCOUNT_A
    # `nobody` has no identity policy allowing sts:AssumeRole, and Admin trusts only the account.
    refused = cli(kura, tmp_path, config, "--profile", "nobody-role", "sts", "get-caller-identity")
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr


def test_sessions_survive_a_restart_and_expire(fresh_kura, time_shift_library):
    iam = fresh_kura.client("iam")
    role = make_role(iam, "Admin", trust(f"arn:aws:iam::{ACCOUNT_A}:root"), policies=[ADMINISTRATOR_ACCESS])
    credentials = fresh_kura.client("sts").assume_role(
        RoleArn=role["Arn"], RoleSessionName="short", DurationSeconds=900)["Credentials"]
    env = session_env(credentials)
    assert fresh_kura.aws("kms", "list-keys", env=env).returncode == 0

    # Kept across a restart (and a kill -9) while it is valid.
    fresh_kura.kill9()
    fresh_kura.start()
    assert fresh_kura.aws("kms", "list-keys", env=env).returncode == 0
    assert session_client(fresh_kura, "sts", credentials).get_caller_identity()["Arn"].endswith("/Admin/short")

    # An hour later (server and client clocks both moved): the token has expired.
    shifted = {**env, "LD_PRELOAD": time_shift_library, "KURA_TEST_TIME_SHIFT": "3600"}
    restart_shifted(fresh_kura, time_shift_library, 3600)
    expired = fresh_kura.aws("kms", "list-keys", env=shifted, check=False)
    assert expired.returncode != 0
    assert "ExpiredTokenException" in expired.stderr, expired.stderr
    assert "The security token included in the request is expired" in expired.stderr
    expired_sts = fresh_kura.aws("sts", "get-caller-identity", env=shifted, check=False)
    assert expired_sts.returncode != 0 and "ExpiredToken" in expired_sts.stderr
    # Users' own keys are unaffected by the clock.
    admin_env = {"LD_PRELOAD": time_shift_library, "KURA_TEST_TIME_SHIFT": "3600"}
    assert fresh_kura.aws("kms", "list-keys", env=admin_env).returncode == 0

    # Long after expiry the session is forgotten: its key is simply unknown.
    shifted = {**shifted, "KURA_TEST_TIME_SHIFT": str(14 * 3600)}
    restart_shifted(fresh_kura, time_shift_library, 14 * 3600)
    forgotten = fresh_kura.aws("kms", "list-keys", env=shifted, check=False)
    assert forgotten.returncode != 0 and "UnrecognizedClientException" in forgotten.stderr
