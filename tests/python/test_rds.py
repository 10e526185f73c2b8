"""Managed databases through the aws CLI v2 and boto3, used with psql and mysql:
seed 000 scenario 2 end to end, the lifecycle, and AWS's errors."""

import json
import os
import pathlib
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, KuraServer, config_text

PASSWORD = "Passw0rd-kura"
SEED_TABLE = """CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    name VARCHAR(100),
    email VARCHAR(100),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO users (name, email) VALUES
    ('Alice', 'alice@example.com'),
    ('Bob', 'bob@example.com'),
    ('Charlie', 'charlie@example.com');
"""


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


def rds_config():
    # Databases are checked against their keys every second in tests.
    return config_text('[rds]\nkey_check_interval_secs = 1\nfirst_port = 25432\n')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = KuraServer(tmp_path_factory.mktemp("rds") / "data", config=rds_config())
    yield s
    s.stop()


def wait_for(describe, wanted, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        status = describe()
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == wanted:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"status never became {wanted}: {seen}")


def cluster_status(rds, cluster_id):
    return lambda: rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"][0]["Status"]


def instance_status(rds, instance_id):
    return lambda: rds.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"][0]["DBInstanceStatus"]


def unit_dir(server, resource_id):
    """The directory of a database's files."""
    path = server.rds_dir / resource_id
    assert path.is_dir(), path
    return path


def grep_tree(root, needle):
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(path)
    return hits


def psql(port, sql, user="admin_user", check=True, password=PASSWORD):
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    out = subprocess.run(["psql", f"host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=require",
                          "-X", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def mysql(port, sql, password=PASSWORD, database="mysql"):
    return subprocess.run(["mysql", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "admin_user",
                           f"-p{password}", "--ssl", "-N", "-B", database, "-e", sql],
                          capture_output=True, text=True, timeout=60)


def test_seed_000_scenario_2_disable_and_enable_the_key(server):
    """Create an Aurora PostgreSQL cluster under a CMK, write the seed's table, disable
    the key: the cluster locks and refuses connections; enable it: the cluster comes back
    by itself with every row."""
    kms = server.client("kms")
    rds = server.client("rds")
    key = kms.create_key(Description="CMK-A")["KeyMetadata"]
    cluster = rds.create_db_cluster(DBClusterIdentifier="aurora-seed", Engine="aurora-postgresql",
                                    MasterUsername="admin_user", MasterUserPassword=PASSWORD,
                                    StorageEncrypted=True, KmsKeyId=key["KeyId"])["DBCluster"]
    assert cluster["Status"] == "creating"
    assert cluster["StorageEncrypted"] is True
    assert cluster["KmsKeyId"] == key["Arn"]
    assert cluster["DbClusterResourceId"].startswith("cluster-")
    wait_for(cluster_status(rds, "aurora-seed"), "available")
    rds.create_db_instance(DBInstanceIdentifier="aurora-seed-1", DBClusterIdentifier="aurora-seed",
                           Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    wait_for(instance_status(rds, "aurora-seed-1"), "available")
    port = rds.describe_db_clusters(DBClusterIdentifier="aurora-seed")["DBClusters"][0]["Port"]

    psql(port, SEED_TABLE)
    out = psql(port, "SELECT * FROM users;")
    for name in ("Alice", "Bob", "Charlie"):
        assert name in out.stdout
    assert "(3 rows)" in out.stdout
    conninfo = psql(port, "\\conninfo").stdout
    assert "SSL connection (protocol: TLSv1." in conninfo
    psql(port, "CHECKPOINT;")
    # At rest, the database's files are ciphertext: the volume's backing directory holds
    # neither the rows nor the table's name.
    backing = unit_dir(server, cluster["DbClusterResourceId"]) / "storage" / "backing"
    assert backing.is_dir()
    for needle in (b"alice@example.com", b"Charlie", b"users_pkey"):
        assert grep_tree(backing, needle) == [], needle

    # An open session, as in the seed.
    session = subprocess.Popen(["psql", f"host=127.0.0.1 port={port} user=admin_user dbname=postgres sslmode=require",
                                "-X", "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PGPASSWORD": PASSWORD})
    session.stdin.write("SELECT 'session-open';\n")
    session.stdin.flush()

    disabled_at = time.monotonic()
    kms.disable_key(KeyId=key["KeyId"])
    history = wait_for(cluster_status(rds, "aurora-seed"), "inaccessible-encryption-credentials-recoverable", timeout=10)
    lock_seconds = time.monotonic() - disabled_at
    assert lock_seconds < 3, (lock_seconds, history)
    assert instance_status(rds, "aurora-seed-1")() == "inaccessible-encryption-credentials-recoverable"
    refused = psql(port, "SELECT * FROM users;", check=False)
    assert refused.returncode != 0
    try:
        session.stdin.write("SELECT * FROM users;\n")
        session.stdin.close()
    except BrokenPipeError:
        pass  # psql already saw its connection end
    session.wait(timeout=30)
    session_out, session_err = session.stdout.read(), session.stderr.read()
    # The open session returns nothing: the server ended it.
    assert "Alice" not in session_out
    assert session.returncode != 0 or "terminat" in session_err or "closed" in session_err
    # StartDBCluster while the key is still disabled is refused with AWS's error.
    with pytest.raises(ClientError) as e:
        rds.start_db_cluster(DBClusterIdentifier="aurora-seed")
    assert error_of(e)[0] == "KMSKeyNotAccessibleFault"

    enabled_at = time.monotonic()
    kms.enable_key(KeyId=key["KeyId"])
    history = wait_for(cluster_status(rds, "aurora-seed"), "available", timeout=30)
    recover_seconds = time.monotonic() - enabled_at
    assert recover_seconds < 10, (recover_seconds, history)
    wait_for(instance_status(rds, "aurora-seed-1"), "available", timeout=10)
    psql(port, "INSERT INTO users (name, email) VALUES ('David', 'david@example.com');")
    out = psql(port, "SELECT name FROM users ORDER BY id;")
    assert [line.strip() for line in out.stdout.splitlines()[2:6]] == ["Alice", "Bob", "Charlie", "David"]

    events = [e["Message"] for e in rds.describe_events(SourceIdentifier="aurora-seed", SourceType="db-cluster")["Events"]]
    assert any("lost access to its KMS key" in m for m in events)


def test_the_caller_needs_create_grant_on_the_key(server):
    kms = server.client("kms")
    rds = server.client("rds")
    key = kms.create_key()["KeyMetadata"]
    kms.put_key_policy(KeyId=key["KeyId"], PolicyName="default", BypassPolicyLockoutSafetyCheck=True, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/administrator"},
             "Action": ["kms:DescribeKey", "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"}]}))
    with pytest.raises(ClientError) as e:
        rds.create_db_cluster(DBClusterIdentifier="no-grant", Engine="aurora-postgresql", MasterUsername="admin_user",
                              MasterUserPassword=PASSWORD, StorageEncrypted=True, KmsKeyId=key["Arn"])
    code, message = error_of(e)
    assert code == "KMSKeyNotAccessibleFault"
    assert "kms:CreateGrant" in message
    with pytest.raises(ClientError) as e:
        rds.describe_db_clusters(DBClusterIdentifier="no-grant")
    assert error_of(e)[0] == "DBClusterNotFoundFault"  # nothing half-created


def test_default_key_is_aws_rds(server):
    rds = server.client("rds")
    kms = server.client("kms")
    instance = rds.create_db_instance(DBInstanceIdentifier="pg-default-key", Engine="postgres",
                                      DBInstanceClass="db.t3.micro", MasterUsername="admin_user",
                                      MasterUserPassword=PASSWORD, AllocatedStorage=20,
                                      StorageEncrypted=True)["DBInstance"]
    managed = kms.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]
    assert instance["KmsKeyId"] == managed["Arn"]
    assert instance["DbiResourceId"].startswith("db-")
    wait_for(instance_status(rds, "pg-default-key"), "available")
    port = rds.describe_db_instances(DBInstanceIdentifier="pg-default-key")["DBInstances"][0]["Endpoint"]["Port"]
    assert "1" in psql(port, "SELECT 1").stdout
    # The service uses the key through a grant the caller gave it.
    grants = kms.list_grants(KeyId=managed["KeyId"])["Grants"]
    assert any(g["Constraints"]["EncryptionContextSubset"] == {"aws:rds:db-id": instance["DbiResourceId"]}
               for g in grants)
    rds.delete_db_instance(DBInstanceIdentifier="pg-default-key", SkipFinalSnapshot=True)


def test_mariadb_instance_with_the_mysql_client(server):
    rds = server.client("rds")
    rds.create_db_instance(DBInstanceIdentifier="maria", Engine="mysql", DBInstanceClass="db.t3.micro",
                           MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                           DBName="app")
    wait_for(instance_status(rds, "maria"), "available")
    instance = rds.describe_db_instances(DBInstanceIdentifier="maria")["DBInstances"][0]
    assert instance["StorageEncrypted"] is False and instance["Engine"] == "mysql"
    out = subprocess.run(["mysql", "--no-defaults", "-h", "127.0.0.1", "-P", str(instance["Endpoint"]["Port"]),
                          "-u", "admin_user", f"-p{PASSWORD}", "--ssl", "-N", "-B", "app", "-e",
                          "CREATE TABLE t (x INT); INSERT INTO t VALUES (42); SELECT x FROM t;"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    rds.delete_db_instance(DBInstanceIdentifier="maria", SkipFinalSnapshot=True)
    wait_for(lambda: [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]].count("maria"), 0)


def test_mariadb_own_load_client_on_an_encrypted_instance(server):
    """MariaDB's own load emulation client (mariadb-slap) and table checker
    (mariadb-check) against a MariaDB whose files live on an encrypted volume."""
    rds = server.client("rds")
    rds.create_db_instance(DBInstanceIdentifier="maria-slap", Engine="mariadb", DBInstanceClass="db.t3.micro",
                           MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                           StorageEncrypted=True)
    wait_for(instance_status(rds, "maria-slap"), "available")
    instance = rds.describe_db_instances(DBInstanceIdentifier="maria-slap")["DBInstances"][0]
    assert instance["StorageEncrypted"] is True
    login = ["--no-defaults", "-h", "127.0.0.1", "-P", str(instance["Endpoint"]["Port"]), "-u", "admin_user",
             f"-p{PASSWORD}", "--ssl"]
    slap = subprocess.run(["mariadb-slap", *login, "--auto-generate-sql", "--auto-generate-sql-load-type=mixed",
                           "--auto-generate-sql-add-autoincrement", "--concurrency=4", "--number-of-queries=8000",
                           "--iterations=1", "--create-schema=slap", "--no-drop"],
                          capture_output=True, text=True, timeout=300)
    assert slap.returncode == 0, slap.stderr
    assert "Average number of seconds to run all queries" in slap.stdout
    check = subprocess.run(["mariadb-check", *login, "--databases", "slap"], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
    rows = [line.split() for line in check.stdout.splitlines() if line.strip()]
    assert rows and all(row[-1] == "OK" for row in rows), check.stdout
    backing = unit_dir(server, instance["DbiResourceId"]) / "storage" / "backing"
    assert backing.is_dir()
    rds.delete_db_instance(DBInstanceIdentifier="maria-slap", SkipFinalSnapshot=True)


def test_stop_and_start_an_instance(server):
    rds = server.client("rds")
    rds.create_db_instance(DBInstanceIdentifier="pg-stop", Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20)
    wait_for(instance_status(rds, "pg-stop"), "available")
    port = rds.describe_db_instances(DBInstanceIdentifier="pg-stop")["DBInstances"][0]["Endpoint"]["Port"]
    psql(port, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7);")
    assert rds.stop_db_instance(DBInstanceIdentifier="pg-stop")["DBInstance"]["DBInstanceStatus"] == "stopping"
    wait_for(instance_status(rds, "pg-stop"), "stopped")
    assert psql(port, "SELECT 1", check=False).returncode != 0
    with pytest.raises(ClientError) as e:
        rds.stop_db_instance(DBInstanceIdentifier="pg-stop")
    assert error_of(e)[0] == "InvalidDBInstanceState"
    rds.start_db_instance(DBInstanceIdentifier="pg-stop")
    wait_for(instance_status(rds, "pg-stop"), "available")
    assert "7" in psql(port, "SELECT x FROM kept").stdout
    rds.reboot_db_instance(DBInstanceIdentifier="pg-stop")
    wait_for(instance_status(rds, "pg-stop"), "available")
    assert "7" in psql(port, "SELECT x FROM kept").stdout
    rds.delete_db_instance(DBInstanceIdentifier="pg-stop", SkipFinalSnapshot=True)


def test_bad_input_gets_aws_errors_and_nothing_half_created(server):
    rds = server.client("rds")
    base = dict(DBInstanceClass="db.t3.micro", MasterUsername="admin_user", MasterUserPassword=PASSWORD,
                AllocatedStorage=20)
    cases = [
        (dict(DBInstanceIdentifier="bad-engine", Engine="oracle-ee", **base), "InvalidParameterValue"),
        (dict(DBInstanceIdentifier="1-starts-with-digit", Engine="postgres", **base), "InvalidParameterValue"),
        (dict(DBInstanceIdentifier="double--hyphen", Engine="postgres", **base), "InvalidParameterValue"),
        (dict(DBInstanceIdentifier="bad-password", Engine="postgres", DBInstanceClass="db.t3.micro",
              MasterUsername="admin_user", MasterUserPassword="short", AllocatedStorage=20), "InvalidParameterValue"),
        (dict(DBInstanceIdentifier="key-without-encryption", Engine="postgres", KmsKeyId="alias/aws/rds", **base),
         "InvalidParameterCombination"),
        (dict(DBInstanceIdentifier="missing-key", Engine="postgres", StorageEncrypted=True,
              KmsKeyId="alias/does-not-exist", **base), "KMSKeyNotAccessibleFault"),
        (dict(DBInstanceIdentifier="aurora-alone", Engine="aurora-postgresql", **base), "InvalidParameterValue"),
        (dict(DBInstanceIdentifier="no-cluster", Engine="aurora-postgresql", DBClusterIdentifier="nope",
              DBInstanceClass="db.r6g.large"), "DBClusterNotFoundFault"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as e:
            rds.create_db_instance(**kwargs)
        assert error_of(e)[0] == code, kwargs
    with pytest.raises(ClientError) as e:
        rds.create_db_instance(DBInstanceIdentifier="x", Engine="postgres", DBInstanceClass="db.t3.micro")
    assert error_of(e)[0] == "MissingParameter"
    names = [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]]
    for kwargs, _ in cases:
        assert kwargs["DBInstanceIdentifier"].lower() not in names
    with pytest.raises(ClientError) as e:
        rds.describe_db_instances(DBInstanceIdentifier="not-there")
    assert error_of(e) == ("DBInstanceNotFound", "DBInstance not-there not found.")
    with pytest.raises(ClientError) as e:
        rds.describe_db_clusters(DBClusterIdentifier="not-there")
    assert error_of(e) == ("DBClusterNotFoundFault", "DBCluster not-there not found.")


def test_duplicates_and_cluster_rules(server):
    rds = server.client("rds")
    rds.create_db_cluster(DBClusterIdentifier="dup", Engine="aurora-mysql", MasterUsername="admin_user",
                          MasterUserPassword=PASSWORD)
    with pytest.raises(ClientError) as e:
        rds.create_db_cluster(DBClusterIdentifier="DUP", Engine="aurora-mysql", MasterUsername="admin_user",
                              MasterUserPassword=PASSWORD)
    assert error_of(e)[0] == "DBClusterAlreadyExistsFault"
    wait_for(cluster_status(rds, "dup"), "available")
    rds.create_db_instance(DBInstanceIdentifier="dup-1", DBClusterIdentifier="dup", Engine="aurora-mysql",
                           DBInstanceClass="db.r6g.large")
    with pytest.raises(ClientError) as e:
        rds.create_db_instance(DBInstanceIdentifier="dup-1", DBClusterIdentifier="dup", Engine="aurora-mysql",
                               DBInstanceClass="db.r6g.large")
    assert error_of(e)[0] == "DBInstanceAlreadyExists"
    with pytest.raises(ClientError) as e:
        rds.create_db_instance(DBInstanceIdentifier="dup-2", DBClusterIdentifier="dup", Engine="aurora-mysql",
                               DBInstanceClass="db.r6g.large", StorageEncrypted=True)
    assert error_of(e) == ("InvalidParameterCombination",
                           "The requested DB Instance will be a member of a DB Cluster and its storage encryption key should not be set directly.")
    wait_for(instance_status(rds, "dup-1"), "available")
    cluster = rds.describe_db_clusters(DBClusterIdentifier="dup")["DBClusters"][0]
    assert cluster["DBClusterMembers"] == [{"DBInstanceIdentifier": "dup-1", "IsClusterWriter": True,
                                            "DBClusterParameterGroupStatus": "in-sync", "PromotionTier": 1}]
    # The master password of an Aurora cluster changes on the cluster, and at once.
    assert mysql(cluster["Port"], "SELECT 1").returncode == 0
    with pytest.raises(ClientError) as e:
        rds.modify_db_instance(DBInstanceIdentifier="dup-1", MasterUserPassword="N3w-passw0rd")
    assert error_of(e)[0] == "InvalidParameterCombination"
    rds.modify_db_cluster(DBClusterIdentifier="dup", MasterUserPassword="N3w-passw0rd", ApplyImmediately=True)
    assert mysql(cluster["Port"], "SELECT 1").returncode != 0
    assert mysql(cluster["Port"], "SELECT 1", password="N3w-passw0rd").stdout.strip() == "1"
    # Backup settings belong to the cluster; its members report them.
    rds.modify_db_cluster(DBClusterIdentifier="dup", PreferredBackupWindow="22:00-22:45", BackupRetentionPeriod=7)
    member = rds.describe_db_instances(DBInstanceIdentifier="dup-1")["DBInstances"][0]
    assert (member["PreferredBackupWindow"], member["BackupRetentionPeriod"]) == ("22:00-22:45", 7)
    with pytest.raises(ClientError) as e:
        rds.modify_db_cluster(DBClusterIdentifier="dup", BackupRetentionPeriod=0)
    assert error_of(e) == ("InvalidParameterValue", "The backup retention period must be between 1 and 35 days: 0.")
    with pytest.raises(ClientError) as e:
        rds.delete_db_cluster(DBClusterIdentifier="dup", SkipFinalSnapshot=True)
    assert error_of(e)[0] == "InvalidDBClusterStateFault"
    rds.delete_db_instance(DBInstanceIdentifier="dup-1", SkipFinalSnapshot=True)
    wait_for(lambda: len(rds.describe_db_clusters(DBClusterIdentifier="dup")["DBClusters"][0]["DBClusterMembers"]), 0)
    rds.delete_db_cluster(DBClusterIdentifier="dup", SkipFinalSnapshot=True)
    wait_for(lambda: [c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]].count("dup"), 0)


def test_tags_filters_and_the_cli(server):
    out = server.aws("rds", "create-db-instance", "--db-instance-identifier", "cli-pg", "--engine", "postgres",
                     "--db-instance-class", "db.t3.micro", "--master-username", "admin_user",
                     "--master-user-password", PASSWORD, "--allocated-storage", "20",
                     "--tags", "Key=team,Value=data")
    created = json.loads(out.stdout)["DBInstance"]
    assert created["DBInstanceStatus"] == "creating"
    arn = created["DBInstanceArn"]
    assert arn == f"arn:aws:rds:ap-northeast-1:{ACCOUNT_A}:db:cli-pg"
    server.aws("rds", "add-tags-to-resource", "--resource-name", arn, "--tags", "Key=env,Value=test")
    tags = json.loads(server.aws("rds", "list-tags-for-resource", "--resource-name", arn).stdout)["TagList"]
    assert {(t["Key"], t["Value"]) for t in tags} == {("team", "data"), ("env", "test")}
    server.aws("rds", "remove-tags-from-resource", "--resource-name", arn, "--tag-keys", "team")
    filtered = json.loads(server.aws("rds", "describe-db-instances", "--filters",
                                     "Name=engine,Values=postgres").stdout)["DBInstances"]
    assert "cli-pg" in [i["DBInstanceIdentifier"] for i in filtered]
    server.aws("rds", "wait", "db-instance-available", "--db-instance-identifier", "cli-pg")
    # A new master password, as runbooks reset it: the old one stops working at once.
    port = json.loads(server.aws("rds", "describe-db-instances", "--db-instance-identifier", "cli-pg").stdout
                      )["DBInstances"][0]["Endpoint"]["Port"]
    psql(port, "CREATE TABLE survives (x int)")
    bad = server.aws("rds", "modify-db-instance", "--db-instance-identifier", "cli-pg",
                     "--master-user-password", "short", check=False)
    assert bad.returncode != 0 and "InvalidParameterValue" in bad.stderr
    server.aws("rds", "modify-db-instance", "--db-instance-identifier", "cli-pg",
               "--master-user-password", "An0ther-pass", "--apply-immediately")
    assert psql(port, "SELECT 1", check=False).returncode != 0
    psql(port, "SELECT * FROM survives", password="An0ther-pass")
    events = json.loads(server.aws("rds", "describe-events", "--source-identifier", "cli-pg",
                                   "--source-type", "db-instance").stdout)["Events"]
    assert "Reset master credentials" in [e["Message"] for e in events]
    server.aws("rds", "delete-db-instance", "--db-instance-identifier", "cli-pg", "--skip-final-snapshot")


def test_restart_brings_databases_back(tmp_path):
    server = KuraServer(tmp_path / "data", config=rds_config())
    try:
        rds = server.client("rds")
        kms = server.client("kms")
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        rds.create_db_instance(DBInstanceIdentifier="survivor", Engine="postgres", DBInstanceClass="db.t3.micro",
                               MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                               StorageEncrypted=True, KmsKeyId=key)
        rds.create_db_instance(DBInstanceIdentifier="locked", Engine="postgres", DBInstanceClass="db.t3.micro",
                               MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                               StorageEncrypted=True, KmsKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
        wait_for(instance_status(rds, "survivor"), "available")
        wait_for(instance_status(rds, "locked"), "available")
        port = rds.describe_db_instances(DBInstanceIdentifier="survivor")["DBInstances"][0]["Endpoint"]["Port"]
        psql(port, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);")
        locked_key = rds.describe_db_instances(DBInstanceIdentifier="locked")["DBInstances"][0]["KmsKeyId"]
        kms.disable_key(KeyId=locked_key)
        wait_for(instance_status(rds, "locked"), "inaccessible-encryption-credentials-recoverable", timeout=10)

        server.kill9()  # the harshest restart
        server.start()
        rds = server.client("rds")
        wait_for(instance_status(rds, "survivor"), "available", timeout=60)
        assert "(2 rows)" in psql(port, "SELECT * FROM t").stdout
        assert instance_status(rds, "locked")() == "inaccessible-encryption-credentials-recoverable"
        server.client("kms").enable_key(KeyId=locked_key)
        wait_for(instance_status(rds, "locked"), "available", timeout=30)
    finally:
        server.stop()
