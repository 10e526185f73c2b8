"""The server as an operator meets it: first start, the credentials file, the aws CLI with
no other set-up, restarts, crashes, TLS, shutdown."""

import base64
import json
import os
import stat
import subprocess

import pytest

from kura_harness import AWS_CLI, KURA_BIN, KuraServer, REGION


def test_first_start_writes_a_working_credentials_file(tmp_path):
    server = KuraServer(tmp_path / "data", config="")
    try:
        credentials = tmp_path / "data" / "credentials"
        assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "data" / "root.key").st_mode) == 0o600
        assert "AWS_SHARED_CREDENTIALS_FILE" in server.banner
        # Exactly what the start-up output tells the user to do.
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
               "AWS_CONFIG_FILE": "/dev/null", "AWS_DEFAULT_REGION": "us-east-1", "AWS_PAGER": ""}
        out = subprocess.run([AWS_CLI, "--endpoint-url", server.endpoint, "kms", "list-keys"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Keys"] == []
        who = subprocess.run([AWS_CLI, "--endpoint-url", server.endpoint, "kms", "create-key"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert json.loads(who.stdout)["KeyMetadata"]["AWSAccountId"] == "000000000000"
    finally:
        server.stop()


def test_restart_keeps_everything(fresh_kura):
    kms = fresh_kura.client("kms")
    key = kms.create_key(Description="durable")["KeyMetadata"]
    kms.create_alias(AliasName="alias/durable", TargetKeyId=key["KeyId"])
    kms.enable_key_rotation(KeyId=key["KeyId"])
    blob = kms.encrypt(KeyId="alias/durable", Plaintext=b"kept", EncryptionContext={"a": "b"})["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key["KeyId"])

    assert fresh_kura.stop() == 0  # SIGTERM stops it cleanly
    fresh_kura.start()
    kms = fresh_kura.client("kms")
    assert kms.describe_key(KeyId="alias/durable")["KeyMetadata"]["Description"] == "durable"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["Plaintext"] == b"kept"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    assert len(kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"]) == 1


def test_acknowledged_writes_survive_kill_9(fresh_kura):
    kms = fresh_kura.client("kms")
    created = []
    for i in range(10):
        key_id = kms.create_key(Description=f"k{i}")["KeyMetadata"]["KeyId"]
        created.append((key_id, kms.encrypt(KeyId=key_id, Plaintext=b"%d" % i)["CiphertextBlob"]))
    kms.disable_key(KeyId=created[0][0])
    fresh_kura.kill9()
    fresh_kura.start()
    kms = fresh_kura.client("kms")
    listed = {k["KeyId"] for k in kms.list_keys()["Keys"]}
    assert {key_id for key_id, _ in created} <= listed
    assert kms.describe_key(KeyId=created[0][0])["KeyMetadata"]["KeyState"] == "Disabled"
    for i, (key_id, blob) in enumerate(created[1:], start=1):
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"%d" % i


def test_tls_with_generated_ca(tmp_path):
    server = KuraServer(tmp_path / "data", extra_args=["--tls"])
    try:
        assert server.endpoint.startswith("https://")
        ca = tmp_path / "data" / "tls" / "ca.pem"
        assert f"--ca-bundle {ca}" in server.banner
        out = server.aws("kms", "list-keys", env={"AWS_CA_BUNDLE": str(ca)})
        assert "Keys" in json.loads(out.stdout)
        # Without trusting the CA the CLI refuses the connection.
        refused = server.aws("kms", "list-keys", check=False, env={"AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"})
        assert refused.returncode != 0
    finally:
        server.stop()


def test_wrong_root_key_is_refused(tmp_path):
    server = KuraServer(tmp_path / "data")
    server.stop()
    other = tmp_path / "other.key"
    result = subprocess.run([KURA_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
                             "--root-key-file", str(other)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "is not the one this data directory was created with" in result.stderr


def test_help_teaches(tmp_path):
    out = subprocess.run([KURA_BIN, "--help"], capture_output=True, text=True)
    assert "--endpoint-url" in out.stdout
    serve = subprocess.run([KURA_BIN, "serve", "--help"], capture_output=True, text=True)
    for flag in ("--listen", "--data-dir", "--config", "--region", "--tls"):
        assert flag in serve.stdout


def test_aws_cli_end_to_end(kura):
    """The seed's tools: the unmodified aws CLI v2 drives a whole key life."""
    created = json.loads(kura.aws("kms", "create-key", "--description", "cli key").stdout)["KeyMetadata"]
    key_id = created["KeyId"]
    kura.aws("kms", "create-alias", "--alias-name", "alias/cli-key", "--target-key-id", key_id)
    encrypted = json.loads(kura.aws("kms", "encrypt", "--key-id", "alias/cli-key", "--plaintext",
                                    base64.b64encode(b"from the cli").decode(),
                                    "--encryption-context", "purpose=cli").stdout)
    decrypted = json.loads(kura.aws("kms", "decrypt", "--ciphertext-blob", encrypted["CiphertextBlob"],
                                    "--encryption-context", "purpose=cli").stdout)
    assert base64.b64decode(decrypted["Plaintext"]) == b"from the cli"
    kura.aws("kms", "disable-key", "--key-id", key_id)
    failed = kura.aws("kms", "encrypt", "--key-id", key_id, "--plaintext", "eA==", check=False)
    assert failed.returncode != 0 and "DisabledException" in failed.stderr and "is disabled." in failed.stderr
    kura.aws("kms", "enable-key", "--key-id", key_id)
    kura.aws("kms", "enable-key-rotation", "--key-id", key_id)
    assert json.loads(kura.aws("kms", "get-key-rotation-status", "--key-id", key_id).stdout)["KeyRotationEnabled"]
    scheduled = json.loads(kura.aws("kms", "schedule-key-deletion", "--key-id", key_id,
                                    "--pending-window-in-days", "7").stdout)
    assert scheduled["KeyState"] == "PendingDeletion"
    kura.aws("kms", "cancel-key-deletion", "--key-id", key_id)
    listed = json.loads(kura.aws("kms", "list-aliases", "--key-id", key_id).stdout)["Aliases"]
    assert [a["AliasName"] for a in listed] == ["alias/cli-key"]
    tags = ["--tags", "TagKey=team,TagValue=data"]
    kura.aws("kms", "tag-resource", "--key-id", key_id, *tags)
    assert json.loads(kura.aws("kms", "list-resource-tags", "--key-id", key_id).stdout)["Tags"] == [
        {"TagKey": "team", "TagValue": "data"}]
    random = json.loads(kura.aws("kms", "generate-random", "--number-of-bytes", "16").stdout)
    assert len(base64.b64decode(random["Plaintext"])) == 16
    assert json.loads(kura.aws("kms", "describe-key", "--key-id", "alias/aws/rds").stdout)["KeyMetadata"]["KeyManager"] == "AWS"
